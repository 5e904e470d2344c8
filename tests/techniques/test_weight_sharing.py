"""The `weight_clusters` knob: k-means weight sharing fine-tuned with shared centroids, stored as codebook + indices."""

from __future__ import annotations

import copy
import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.techniques import export, quantize
from lepton_search.techniques import weight_sharing as ws


def layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, ws.LAYERS)]


def distinct(model: nn.Module) -> list[int]:
    return [int(m.weight.detach().unique().numel()) for m in layers(model)]


def uniform_mse(w: torch.Tensor, k: int) -> float:
    """Round-to-nearest on k levels evenly spaced over [min, max] (what a k-level linear quantizer gives)."""
    low, high = float(w.min()), float(w.max())
    step = (high - low) / (k - 1)
    return float(((torch.round((w - low) / step) * step + low - w) ** 2).mean())


def run(model: onnx.ModelProto, feeds: dict, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def lloyd_reference(x: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's Lloyd k-means from the same linear start, converged; centroids sorted."""
    start = np.linspace(float(x.min()), float(x.max()), k).reshape(-1, 1)
    fit = KMeans(k, init=start, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x.reshape(-1, 1))
    return np.sort(fit.cluster_centers_.ravel())


def mse(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(np.min((x.reshape(-1, 1) - centroids.reshape(1, -1)) ** 2, 1).mean())


def test_kmeans_is_lloyds_from_the_linear_start():
    x = torch.rand(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # no cluster empties
    centroids, indices = ws.kmeans(x, 16, iters=300)
    assert np.allclose(centroids.numpy(), lloyd_reference(x.numpy(), 16), rtol=1e-9, atol=1e-12)
    assert torch.equal(indices, (x.reshape(-1, 1) - centroids).abs().argmin(1))  # each value at its nearest


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_kmeans_on_trained_weights_is_as_good_as_scikit_learn(digits_mlp, layer):
    w = digits_mlp.model[layer].weight.detach()
    x = w.double().numpy().ravel()
    for k in (16, 64):  # empty clusters are moved differently (here: to a random weight; scikit-learn: far points)
        assert mse(x, ws.kmeans(w, k, iters=300)[0].double().numpy()) < 1.1 * mse(x, lloyd_reference(x, k))


@pytest.mark.parametrize("k", [16, 64])
def test_cluster_shares_k_values_and_beats_uniform_quantization(digits_mlp, k):
    model = copy.deepcopy(digits_mlp.model)
    before = [m.weight.detach().clone() for m in layers(model)]
    info = ws.cluster(model, k, seed=0)
    assert info.layers == ("0", "3", "5") and info.skipped == ()
    assert all(n <= k for n in distinct(model))
    ratios = [float(((m.weight.detach() - w) ** 2).mean()) / uniform_mse(w, k) for m, w in zip(layers(model), before)]
    assert max(ratios) < 1 and min(ratios) < 0.8  # trained weights are not uniform: k-means places the values better
    tiny = ws.cluster(nn.Sequential(nn.Linear(4, 3)), 16, seed=0)
    assert tiny.layers == () and tiny.skipped == ("0",)  # 12 weights < 16 values: left whole, and said


def test_finetuning_trains_the_centroids_and_keeps_the_sharing(digits_mlp):
    model = copy.deepcopy(digits_mlp.model).train()
    ws.cluster(model, 16, seed=0)
    head = model[5]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "5.parametrizations.weight.0.centroids" in trainable
    assert not any(n.endswith("original") for n in trainable)  # the frozen original is no trainable parameter
    centroids = head.parametrizations.weight[0].centroids.detach().clone()
    indices = head.parametrizations.weight[0].indices.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # made after clustering, from model.parameters()
    xs, ys = zip(*[digits_mlp.dataset("train")[i] for i in range(64)])
    x, y = torch.stack(xs), torch.as_tensor(ys)
    for step in range(5):
        opt.zero_grad()
        w = head.weight  # the shared weight this forward uses
        w.retain_grad()
        out = model[4](model[3](model[2](model[1](model[0](x)))))
        nn.functional.cross_entropy(nn.functional.linear(out, w, head.bias), y).backward()
        if step == 0:  # a centroid's gradient: its members' summed (Deep Compression), over their count
            members = torch.zeros(16).index_add_(0, indices.long().ravel(), w.grad.ravel())
            counts = torch.bincount(indices.long().ravel(), minlength=16).clamp_min(1)
            assert torch.allclose(head.parametrizations.weight[0].centroids.grad, members / counts, atol=1e-7)
        opt.step()
    assert not torch.equal(head.parametrizations.weight[0].centroids, centroids)
    assert torch.equal(head.parametrizations.weight[0].indices, indices)
    assert all(n <= 16 for n in distinct(model))
    ws.bake(model)
    assert not any(parametrize.is_parametrized(m) for m in layers(model)) and all(n <= 16 for n in distinct(model))


def test_a_clustered_model_copies_and_round_trips_through_state_dict(digits_mlp):
    model = copy.deepcopy(digits_mlp.model).eval()
    ws.cluster(model, 64, seed=0)
    with torch.no_grad():
        model[0].parametrizations.weight[0].centroids.add_(0.01)  # as a fine-tuning epoch would move them
    x = torch.stack([digits_mlp.dataset("val")[i][0] for i in range(8)])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # the checkpoint store's format
    buffer.seek(0)
    again = copy.deepcopy(digits_mlp.model).eval()
    ws.cluster(again, 64, seed=0)  # the same student a resumed trial rebuilds
    again.load_state_dict(torch.load(buffer, weights_only=True))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(again(x), model(x)) and torch.equal(twin(x), model(x))
        ws.bake(twin)
        assert torch.equal(twin(x), model(x)) and isinstance(twin[0].weight, nn.Parameter)


def shared_file(workload, k: int, tmp_path) -> tuple[onnx.ModelProto, dict]:
    model = copy.deepcopy(workload.model).eval()
    ws.cluster(model, k, seed=0)
    ws.bake(model)
    graph = export.to_onnx(model, workload.example_args, tmp_path / f"k{k}.onnx", names=workload.input_names)
    x = torch.stack([workload.dataset("val")[i][0] for i in range(32)]).numpy()
    return graph, {workload.input_names[0]: x}


@pytest.mark.parametrize("k,ratio", [(16, 8), (64, 4), (256, 4)])
def test_the_encoded_file_is_smaller_and_runs_the_same(digits_cnn, k, ratio, tmp_path):
    graph, feeds = shared_file(digits_cnn, k, tmp_path)
    encoded, info = ws.encode_graph(graph, k)
    convs = [n.input[1] for n in graph.graph.node if n.op_type == "Conv"]
    assert set(convs) - {convs[0]} <= set(info.scaled)  # BatchNorm folded: codebook x per-channel scale
    assert info.index_type == ("uint4" if k == 16 else "uint8")
    assert 0.8 * ratio < info.bytes_before / info.bytes_after <= ratio  # the codebook and scales cost a little
    plain, small = len(graph.SerializeToString()), len(encoded.SerializeToString())
    assert plain - small >= 0.95 * (info.bytes_before - info.bytes_after)
    onnx.checker.check_model(encoded, full_check=True)
    assert np.allclose(run(encoded, feeds), run(graph, feeds), rtol=1e-5, atol=1e-5)
    # ONNX Runtime folds Cast -> Gather -> Mul at session creation: the session runs a plain FP32 Conv graph
    run(encoded, feeds, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, tmp_path / "opt.onnx")
    folded = onnx.load(tmp_path / "opt.onnx")
    assert not {n.op_type for n in folded.graph.node} & {"Gather", "Cast", "Mul"}
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in folded.graph.initializer)


def test_an_unshared_graph_is_left_as_it_is(digits_cnn, tmp_path):
    graph = export.to_onnx(copy.deepcopy(digits_cnn.model), digits_cnn.example_args, tmp_path / "m.onnx")
    encoded, info = ws.encode_graph(graph, 16)
    assert info.weights == () and len(encoded.graph.node) == len(graph.graph.node)
    assert ws.encode_graph(graph, 0)[0] is graph


def test_at_16_bits_the_codebook_stays_and_the_rest_goes_fp16(digits_mlp, tmp_path):
    graph, feeds = shared_file(digits_mlp, 64, tmp_path)
    encoded, info = ws.encode_graph(graph, 64)  # before quantization, as compress does
    half = quantize.quantize(encoded, 16)
    fp16 = len(quantize.quantize(graph, 16).SerializeToString())
    assert len(info.weights) == 3 and len(half.SerializeToString()) < 0.6 * fp16  # 8-bit indices for 16-bit weights
    assert np.allclose(run(half, feeds), run(graph, feeds), rtol=1e-5, atol=1e-5)


def test_bad_values_and_combinations_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^weight_clusters: got 32; shared values per layer: choose from "
                                          r"\[0, 16, 64, 256\] \(0: off\)$") as caught:
        SearchSpace(weight_clusters=[0, 32])
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="weight_clusters: got True"):
        SearchSpace(weight_clusters=True)
    with pytest.raises(ConfigError, match=r"weight_clusters: got 64; acts on FP32/FP16 files, but bits \[8\]"):
        ws.check({"weight_clusters": [0, 64], "bits": [32, 8], "finetune_epochs": [1]})
    with pytest.raises(ConfigError, match="prune_method 'unstructured'"):
        ws.check({"weight_clusters": [16], "bits": [32], "prune_method": ["unstructured"], "finetune_epochs": [1]})
    assert ws.check({"weight_clusters": [0], "bits": [8]}) == []
    assert ws.check({"weight_clusters": [16, 64], "bits": [32, 16], "finetune_epochs": [0, 1]}) == []
    assert "finetune_epochs" in ws.check({"weight_clusters": [16], "bits": [32], "finetune_epochs": [0]})[0]


def test_a_search_with_weight_clusters_stores_the_smaller_file(digits_mlp, sqlite_url, tmp_path):
    space = SearchSpace(prune_ratio=(0.0, 0.0, 0.25), bits=(32,), finetune_epochs=(1, 1), weight_clusters=[0, 16],
                        trials=2)
    assert space.n_configs == 2 and ws.check({k: space.domain(k) for k in ("weight_clusters", "bits",
                                                                           "finetune_epochs")}) == []
    result = search(digits_mlp, space, n_trials=2, storage=sqlite_url, study_name="ws", verbose=False,
                    artifacts=tmp_path / "art", callbacks=[])
    trials = result.trials().set_index("weight_clusters")
    assert sorted(trials.index) == [0, 16]
    full, shared = trials.loc[0], trials.loc[16]
    weights_mb = sum(m.weight.numel() for m in layers(digits_mlp.model)) * 4 / 1e6
    assert full.size_mb - shared.size_mb > 0.8 * weights_mb * (1 - 1 / 8)  # 4-bit indices for 32-bit weights
    assert shared.accuracy > full.accuracy - 0.05  # one epoch with 16 shared values per layer keeps the digits


def test_the_head_refit_fits_a_shared_heads_centroids(digits_mlp):
    from lepton_search.techniques import finetune

    model = copy.deepcopy(digits_mlp.model)
    ws.cluster(model, 16, seed=0)
    before = model[5].parametrizations.weight[0].centroids.detach().clone()
    finetune.refit_head(model, finetune.frozen_copy(digits_mlp.model), digits_mlp.loader("train", batch_size=64),
                        task=digits_mlp.task, max_iter=5)
    assert not torch.equal(model[5].parametrizations.weight[0].centroids, before) and distinct(model)[-1] <= 16
