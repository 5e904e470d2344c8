"""The embedding knobs on a real exported graph: row-wise INT8 / INT4 tables that ONNX Runtime runs, columns pruned
consistently for every layer reading them, a Gather that costs something in the latency predictor, and the INT8
route of id inputs (not token sequences)."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from rec_workload import CANDIDATES, TinyRec, trained_workload

from lepton_search.latency import graph_cost
from lepton_search.latency.host_cpu import optimized_op_types, session
from lepton_search.techniques import embeddings, int8_dynamic
from lepton_search.techniques.export import to_onnx


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyRec().eval()
    x = (torch.arange(CANDIDATES) % 40, torch.arange(CANDIDATES) * 5 % 120)
    path = tmp_path_factory.mktemp("emb") / "rec.onnx"
    return model, x, to_onnx(model, x, path, names=["user", "item"]), path


def _run(graph: onnx.ModelProto, path, x) -> np.ndarray:
    onnx.save(graph, str(path))
    return session(path).run(None, {"user": x[0].numpy(), "item": x[1].numpy()})[0]


@pytest.mark.parametrize("bits", [8, 4])
def test_row_wise_tables_are_integers_in_the_file_and_run_in_onnx_runtime(exported, tmp_path, bits):
    model, x, graph, path = exported
    quantized, tables = embeddings.quantize_embeddings(graph, bits)
    assert tables == ["item_gmf.weight", "item_mlp.weight", "user_gmf.weight", "user_mlp.weight"]
    inits = {i.name: i for i in quantized.graph.initializer}
    for name in tables:
        assert name not in inits  # the FP32 table is gone
        stored = inits[f"{name}_q{bits}"]
        assert stored.data_type == onnx.TensorProto.UINT8
        assert list(stored.dims) == [model.get_submodule(name[:-7]).num_embeddings, 16 if bits == 8 else 8]
    out = tmp_path / f"q{bits}.onnx"
    # the reference: the torch model with each table replaced by its dequantized rows, computed in numpy
    ref = copy.deepcopy(model)
    for name in tables:
        table = ref.get_submodule(name[:-7])
        q, scale, zero = embeddings.row_quantize(table.weight.detach().numpy(), bits)
        table.weight.data = torch.from_numpy((q.astype(np.float32) - zero) * scale)
    got, want = _run(quantized, out, x), ref(*x).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, model(*x).detach().numpy(), atol=1e-6)  # the tables did change
    assert "GatherBlockQuantized" in optimized_op_types(out)  # ORT 1.32 runs the 4-bit kernel on CPU itself
    assert out.stat().st_size < path.stat().st_size


def test_row_quantization_error_is_within_half_a_step_per_row():
    w = np.random.default_rng(0).standard_normal((50, 24)).astype(np.float32) * np.linspace(0.1, 3, 50)[:, None]
    for bits in (8, 4):
        q, scale, zero = embeddings.row_quantize(w, bits)
        err = np.abs((q.astype(np.float32) - zero) * scale - w)
        assert (err <= scale / 2 + 1e-6).all() and q.max() <= (1 << bits) - 1


def test_an_odd_width_table_keeps_its_width_at_4_bits(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(30, 7), torch.nn.Flatten(), torch.nn.Linear(7 * 3, 2)).eval()
    x = torch.randint(0, 30, (4, 3))
    graph = to_onnx(model, x, tmp_path / "odd.onnx", names=["ids"])
    quantized, _ = embeddings.quantize_embeddings(graph, 4)
    onnx.save(quantized, str(tmp_path / "odd4.onnx"))
    got = session(tmp_path / "odd4.onnx").run(None, {"ids": x.numpy()})[0]
    assert got.shape == (4, 2) and np.abs(got - model(x).detach().numpy()).max() < 0.1


def test_embedding_dim_drops_the_same_columns_everywhere_they_are_read(exported):
    model, x, _, _ = exported
    slim = embeddings.prune_embedding_dims(copy.deepcopy(model), x, 0.5)
    assert slim.user_gmf.embedding_dim == slim.item_gmf.embedding_dim == 8  # the GMF product's two operands
    assert slim.user_mlp.embedding_dim == slim.item_mlp.embedding_dim == 8
    assert slim.mlp[0].in_features == 16 and slim.predict.in_features == 8 + 32  # readers of the columns
    assert slim.mlp[0].out_features == 64  # the MLP's own widths are prune_ratio's, not this knob's
    assert slim(*x).shape == (CANDIDATES,)
    # the same column indices go from both GMF tables and from the predict layer's inputs that read them
    def kept(orig: torch.Tensor, new: torch.Tensor) -> list[int]:
        return [int((orig.T - c).abs().sum(1).argmin()) for c in new.T]

    cols = kept(model.user_gmf.weight, slim.user_gmf.weight)
    assert cols == kept(model.item_gmf.weight, slim.item_gmf.weight) and len(set(cols)) == 8
    torch.testing.assert_close(slim.predict.weight[:, :8], model.predict.weight[:, cols])


def test_a_table_lookup_costs_bytes_and_a_shape_gather_stays_free(exported, tmp_path):
    _, _, graph, _ = exported
    costs = {c.name: c for c in graph_cost.analyze(graph, batch_size=CANDIDATES)}
    lookups = [c for c in costs.values() if c.op_type == "Gather"]
    assert len(lookups) == 4 and all(c.precision == "fp32" and c.weight_bytes == CANDIDATES * 16 * 4 for c in lookups)
    q4 = graph_cost.analyze(embeddings.quantize_embeddings(graph, 4)[0], batch_size=CANDIDATES)
    packed = [c for c in q4 if c.op_type == "GatherBlockQuantized"]
    assert len(packed) == 4 and all(c.weight_bytes == CANDIDATES * (16 * 0.5 + 8) for c in packed)


def test_one_id_per_sample_is_not_a_token_sequence():
    assert not int8_dynamic.dynamic_route(["int64", "int64"], lstm=False, shapes=[(), ()])  # user, item ids
    assert int8_dynamic.dynamic_route(["int64"], lstm=False, shapes=[(128,)])  # token ids
    assert int8_dynamic.dynamic_route(["int64"], lstm=False)  # unknown shapes: as before, tokens


@pytest.mark.slow
def test_a_trained_recommender_keeps_its_ranking_at_4_bit_tables(tmp_path):
    from lepton_search.candidate import compress
    from lepton_search.evaluate.accuracy import onnx_accuracy
    from lepton_search.space import CompressionConfig, FinetuneSettings

    wl = trained_workload(task="ranking")
    to_onnx(wl.model, wl.example_args, tmp_path / "base.onnx", names=wl.input_names)
    base = onnx_accuracy(tmp_path / "base.onnx", wl).accuracy
    cand = compress(wl, CompressionConfig(0.0, 32, 0, embedding_bits=4), tmp_path / "q4.onnx",
                    settings=FinetuneSettings())
    assert cand.quantization["embedding_tables"] and cand.size_mb < 0.7 * (tmp_path / "base.onnx").stat().st_size / 1e6
    assert onnx_accuracy(cand.onnx_path, wl).accuracy >= base - 0.05
