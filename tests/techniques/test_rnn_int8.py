"""An LSTM exported to ONNX (the LSTM op, dynamic batch, equal to torch) and quantized to INT8 that ONNX
Runtime runs with integer kernels (DynamicQuantizeLSTM, MatMulInteger); a GRU is left FP32 with a warning."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from rnn_workload import lstm_workload
from torch import nn

from lepton_search.space import CompressionConfig
from lepton_search.techniques import export, prune, quantize


@pytest.fixture(scope="module")
def tiny_lstm():
    torch.set_num_threads(1)
    return lstm_workload()


def session(path, optimized=None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    if optimized is not None:
        opts.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_lstm_exports_to_the_onnx_lstm_op_with_a_dynamic_batch(tiny_lstm, tmp_path):
    wl = tiny_lstm
    graph = export.to_onnx(wl.model, wl.example_input, tmp_path / "fp32.onnx", names=["input_ids"])
    assert "LSTM" in {n.op_type for n in graph.graph.node}
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    sess = session(tmp_path / "fp32.onnx")
    ids, _ = wl.dataset("val").tensors
    for batch in (1, 7, 64):
        got = sess.run(None, {"input_ids": ids[:batch].numpy()})[0]
        with torch.no_grad():
            want = wl.model(ids[:batch]).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prune_ratio", [0.0, 0.5])
def test_int8_lstm_runs_integer_kernels_and_keeps_accuracy(tiny_lstm, tmp_path, prune_ratio):
    wl = tiny_lstm
    model = prune.prune(wl.model, wl.example_input, CompressionConfig(prune_ratio, 8, 0, round_to=8))
    graph = export.to_onnx(model, wl.example_input, tmp_path / "fp32.onnx", names=["input_ids"])
    onnx.save(quantize.quantize(graph, 8), str(tmp_path / "int8.onnx"))

    fp32 = session(tmp_path / "fp32.onnx")
    session(tmp_path / "int8.onnx", optimized=tmp_path / "int8.opt.onnx")  # the graph ONNX Runtime runs
    int8 = session(tmp_path / "int8.opt.onnx")
    kernels = {n.op_type for n in onnx.load(str(tmp_path / "int8.opt.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in kernels and "LSTM" not in kernels
    assert kernels & {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}  # the classifier

    ids, labels = wl.dataset("test").tensors
    logits32 = fp32.run(None, {"input_ids": ids.numpy()})[0]
    logits8 = int8.run(None, {"input_ids": ids.numpy()})[0]
    acc32 = (logits32.argmax(1) == labels.numpy()).mean()
    acc8 = (logits8.argmax(1) == labels.numpy()).mean()
    assert acc32 > 0.9
    assert abs(acc8 - acc32) <= 0.01  # 256 test sequences: at most 2 flips
    assert (logits8.argmax(1) == logits32.argmax(1)).mean() >= 0.98


def test_gru_is_left_fp32_with_a_warning(tmp_path):
    class GRUHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.fc = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.rnn(x)[0][:, -1])

    graph = export.to_onnx(GRUHead().eval(), torch.randn(1, 5, 4), tmp_path / "gru.onnx")
    with pytest.warns(UserWarning, match="leaves /rnn/GRU in FP32: ONNX Runtime has no integer GRU/RNN kernel"):
        quantize.quantize(graph, 16)


def test_no_op_check_keeps_prune_and_bits_for_an_lstm(tiny_lstm, tmp_path):
    from lepton_search.space import SearchSpace
    from lepton_search.study import acting_space

    graph = export.to_onnx(tiny_lstm.model, tiny_lstm.example_input, tmp_path / "fp32.onnx", names=["input_ids"])
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8))
    assert acting_space(tiny_lstm, space, graph, verbose=False) is space
