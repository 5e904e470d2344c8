"""Pruning, BatchNorm re-estimation, export and quantization on tiny real models."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency.host_cpu import optimized_op_types, session
from lepton_search.techniques import export, finetune, prune, quantize


def _torch_accuracy(model, wl):
    model.eval()
    with torch.no_grad():
        x, y = wl.val
        return float((model(x).argmax(1) == y).float().mean())


def test_structured_pruning_shrinks_the_graph_and_keeps_the_classifier(digits_cnn):
    x = digits_cnn.example_input
    pruned = prune.prune_structured(digits_cnn.model, x, 0.5)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    base_convs = [m for m in digits_cnn.model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [b.out_channels // 2 for b in base_convs]
    assert pruned.head.out_features == 10
    macs, params = prune.count(pruned, x)
    base_macs, base_params = prune.count(digits_cnn.model, x)
    assert macs < 0.4 * base_macs and params < 0.4 * base_params
    assert pruned(x).shape == (1, 10)
    # the original model is untouched
    assert [b.out_channels for b in base_convs] == [16, 32, 32]


def test_structured_pruning_of_a_bare_sequential_mlp(digits_mlp):
    pruned = prune.prune_structured(digits_mlp.model, digits_mlp.example_input, 0.5)
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [64, 64, 10]


def test_unstructured_pruning_zeros_weights_but_not_the_classifier(digits_mlp):
    x = digits_mlp.example_input
    masked = prune.prune_unstructured(digits_mlp.model, x, 0.6)
    baked = prune.bake_masks(masked, x)
    assert isinstance(baked, nn.Sequential)
    linears = [m for m in baked.modules() if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        assert float((layer.weight == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
    assert float((linears[-1].weight == 0).float().mean()) < 0.05
    assert [m.out_features for m in linears] == [128, 128, 10]  # the graph keeps its shape


def test_batchnorm_reestimation_restores_a_pruned_cnn(digits_cnn):
    x = digits_cnn.example_input
    base_acc = _torch_accuracy(digits_cnn.model, digits_cnn)
    pruned = prune.prune_structured(digits_cnn.model, x, 0.5)
    before = _torch_accuracy(pruned, digits_cnn)
    used = finetune.recalibrate_batchnorm(pruned, digits_cnn.loader("train", batch_size=64, shuffle=True), max_batches=10)
    after = _torch_accuracy(pruned, digits_cnn)
    assert used == 10
    assert after > before + 0.05, (base_acc, before, after)


def test_distillation_changes_weights_and_improves_a_pruned_model(digits_cnn):
    x = digits_cnn.example_input
    pruned = prune.prune_structured(digits_cnn.model, x, 0.75)
    loader = digits_cnn.loader("train", batch_size=64, shuffle=True)
    finetune.recalibrate_batchnorm(pruned, loader)
    before = _torch_accuracy(pruned, digits_cnn)
    w0 = pruned.head.weight.detach().clone()
    secs = finetune.distill(pruned, finetune.frozen_copy(digits_cnn.model), loader, epochs=3, lr=0.02)
    assert secs > 0 and not torch.equal(w0, pruned.head.weight)
    assert _torch_accuracy(pruned, digits_cnn) >= before - 0.01


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory, digits_cnn):
    path = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    graph = export.to_onnx(digits_cnn.model, digits_cnn.example_input, path)
    return path, graph


def test_export_folds_batchnorm_and_matches_torch(fp32_onnx, digits_cnn):
    path, graph = fp32_onnx
    assert "BatchNormalization" not in {n.op_type for n in graph.graph.node}
    x = digits_cnn.val[0][:16]
    out = session(path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = digits_cnn.model(x).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-4)


def _calib(wl, n=32):
    return [xb.numpy() for xb, _ in wl.loader("train", batch_size=1, subset=n)]


def test_int8_runs_integer_kernels_in_onnxruntime(fp32_onnx, digits_cnn, tmp_path):
    _, graph = fp32_onnx
    q = quantize.quantize(graph, 8, _calib(digits_cnn))
    path = tmp_path / "int8.onnx"
    onnx.save(q, path)
    ops = optimized_op_types(path)
    assert ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}, ops
    acc = onnx_accuracy(path, digits_cnn).accuracy
    base = onnx_accuracy(fp32_onnx[0], digits_cnn).accuracy
    assert acc > base - 0.05


def test_int8_of_a_sequential_mlp_uses_integer_matmul(digits_mlp, tmp_path):
    graph = export.to_onnx(digits_mlp.model, digits_mlp.example_input, tmp_path / "mlp.onnx")
    q = quantize.quantize(graph, 8, _calib(digits_mlp))
    onnx.save(q, tmp_path / "mlp8.onnx")
    ops = optimized_op_types(tmp_path / "mlp8.onnx")
    assert ops & {"QLinearMatMul", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul"}, ops


def test_fp16_stores_half_precision_weights(fp32_onnx, digits_cnn, tmp_path):
    path32, graph = fp32_onnx
    q = quantize.quantize(graph, 16)
    dtypes = {i.data_type for i in q.graph.initializer if len(i.dims) > 1}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    onnx.save(q, tmp_path / "fp16.onnx")
    assert (tmp_path / "fp16.onnx").stat().st_size < 0.6 * path32.stat().st_size
    x = digits_cnn.val[0][:16].numpy()
    a = session(tmp_path / "fp16.onnx").run(None, {"input": x})[0]
    b = session(path32).run(None, {"input": x})[0]
    assert 0 < np.abs(a - b).max() < 1e-2  # rounded, not identical, close


def test_int4_packs_weights_as_int4(fp32_onnx, digits_cnn, tmp_path):
    path32, graph = fp32_onnx
    q = quantize.quantize(graph, 4)
    onnx.checker.check_model(q)
    int4 = [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 4  # three convs and the linear head
    onnx.save(q, tmp_path / "int4.onnx")
    assert (tmp_path / "int4.onnx").stat().st_size < 0.3 * path32.stat().st_size
    acc4 = onnx_accuracy(tmp_path / "int4.onnx", digits_cnn).accuracy
    acc32 = onnx_accuracy(path32, digits_cnn).accuracy
    assert acc4 > acc32 - 0.1


def test_int4_round_trip_matches_numpy_reference():
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    q, scale = quantize.int4_quantize_array(w, axis=0)
    assert q.min() >= -8 and q.max() <= 7
    err = np.abs(q * scale[:, None, None, None] - w).max(axis=(1, 2, 3))
    assert np.all(err <= scale / 2 + 1e-6)


def test_untraceable_model_fails_with_one_line(tmp_path):
    from lepton_search.errors import ConfigError

    class NoOnnxOp(nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x.reshape(-1, 2, 2)).real.reshape(x.shape[0], -1)

    with pytest.raises(ConfigError) as err:
        export.to_onnx(NoOnnxOp(), torch.ones(1, 4), tmp_path / "w.onnx")
    assert err.value.field == "model" and "\n" not in str(err.value)


def test_quantization_aware_context_rounds_weights_and_restores_the_module(digits_cnn):
    from torch.nn.utils import parametrize

    from lepton_search.techniques import qat

    model = prune.prune_structured(digits_cnn.model, digits_cnn.example_input, 0.25)
    conv = model.features[0]
    raw = conv.weight.detach().clone()
    with qat.simulate_int8(model):
        assert parametrize.is_parametrized(conv, "weight")
        w = conv.weight.detach()
        scale = raw.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        steps = w / scale
        assert torch.allclose(steps, steps.round(), atol=1e-3)  # on the INT8 grid
        assert not torch.equal(w, raw)
        model(digits_cnn.example_input)
    assert not parametrize.is_parametrized(conv, "weight")
    assert torch.equal(conv.weight.detach(), raw)  # float weights back, no hooks left
    assert not conv._forward_pre_hooks


def test_int8_fine_tuning_simulates_the_quantization_the_file_gets(digits_cnn, tmp_path):
    """Static INT8 (a CNN): quantization-aware fine-tuning. Dynamic INT8 (token ids): plain float fine-tuning,
    since activations are quantized at run time, not with trained ranges."""
    from token_workload import token_workload

    from lepton_search.candidate import compress
    from lepton_search.space import CompressionConfig, FinetuneSettings

    settings = FinetuneSettings(subset_size=64, batch_size=32)
    config = CompressionConfig(0.0, 8, 1)
    cnn = compress(digits_cnn, config, tmp_path / "cnn.onnx", settings=settings)
    tokens = compress(token_workload(), config, tmp_path / "tok.onnx", settings=settings)
    assert cnn.quantization_aware and not tokens.quantization_aware
    ops = {n.op_type for n in onnx.load(str(tmp_path / "tok.onnx")).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}  # the file is dynamic INT8
