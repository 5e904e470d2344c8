"""INT4 blocks with a float offset (`int4_zero_point` "float", `techniques._int4_offset`): checked against numpy's
matmul of the dequantized weight (an independent reference); a weight already on a GGUF Q4_1 grid (w = d * q + m,
blocks of 32) comes back exactly; through `compress` the knob makes the route; where it cannot act it is refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from lepton_search.candidate import compress
from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace
from lepton_search.techniques import matmul_nbits
from lepton_search.techniques._int4_offset import block_min_max
from lepton_search.techniques.matmul_nbits import Int4Settings, quantize_weights
from lepton_search.techniques.stages import CheckContext
from lepton_search.workloads import Workload


def linear_net(weights: list[np.ndarray]) -> onnx.ModelProto:
    """x [batch, seq, K] -> MatMul chain of constant weights (the second shares the first's input when shapes let)."""
    k = weights[0].shape[0]
    inits = [numpy_helper.from_array(w.astype(np.float32), f"w{i}") for i, w in enumerate(weights)]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="mm0")]
    outs = [helper.make_tensor_value_info("h0", onnx.TensorProto.FLOAT, None)]
    for i in range(1, len(weights)):
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"h{i}"], name=f"mm{i}"))  # same input: one block sum
        outs.append(helper.make_tensor_value_info(f"h{i}", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, None, k])],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def dequantized(w: np.ndarray, block: int) -> np.ndarray:
    q, scale, offset = block_min_max(w, block)
    k = w.shape[0]
    return (scale[:, :, None] * q + offset[:, :, None]).reshape(w.shape[1], -1)[:, :k].T


@pytest.mark.parametrize(("k", "block"), [(96, 32), (160, 64)])  # 160 = 2.5 blocks of 64: a padded last block
def test_output_equals_the_dequantized_weights_matmul(k, block):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((k, 48)).astype(np.float32), rng.standard_normal((k, 24)).astype(np.float32)]
    x = rng.standard_normal((2, 5, k)).astype(np.float32)
    out = quantize_weights(linear_net(weights), Int4Settings(block, False, 0, "float"))
    assert matmul_nbits.nbits_nodes(out) == 2 and sum(n.op_type == "MatMul" for n in out.graph.node) == 3  # 1 sum
    assert not any(i.name in ("w0", "w1") for i in out.graph.initializer)  # the FP32 weights are gone
    for got, w in zip(run(out, x), weights):
        want = x @ dequantized(w, block)
        assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
        assert np.abs(dequantized(w, block) - w).max() <= np.abs(w).max() * 2 / 15  # within a step of a block


def test_a_weight_on_a_q4_1_grid_round_trips_exactly():
    """GGUF Q4_1: blocks of 32, w = d * q + m with q 0..15 hitting 0 and 15 (the quantizer maps min and max there),
    d and m half floats. Min/max recovers d, m and q; MatMulNBits at accuracy level 0 reproduces x @ w."""
    rng = np.random.default_rng(1)
    k, n = 128, 40
    q = rng.integers(0, 16, (n, k // 32, 32))
    q[:, :, 0], q[:, :, 1] = 0, 15
    d = rng.uniform(0.001, 0.05, (n, k // 32)).astype(np.float16).astype(np.float32)
    m = rng.normal(0, 0.1, (n, k // 32)).astype(np.float16).astype(np.float32)
    w = (d[..., None] * q + m[..., None]).astype(np.float32).reshape(n, k).T
    q_back, scale, offset = block_min_max(w, 32)
    assert np.array_equal(q_back, q) and np.array_equal(offset, m) and np.allclose(scale, d, rtol=1e-6, atol=0)
    assert np.abs(dequantized(w, 32) - w).max() < 1e-6 * np.abs(w).max()
    x = rng.standard_normal((1, 3, k)).astype(np.float32)
    got = run(quantize_weights(linear_net([w]), Int4Settings(32, False, 0, "float")), x)[0]
    assert np.abs(got - x @ w).max() < 1e-5 * np.abs(x @ w).max()
    integer = run(quantize_weights(linear_net([w]), Int4Settings(32, False, 0, "int")), x)[0]
    assert np.abs(integer - x @ w).max() > 10 * np.abs(got - x @ w).max()  # a 4-bit zero point cannot re-make it


def test_settings_and_checks_refuse_what_cannot_act():
    with pytest.raises(ValueError, match="zero_point.*symmetric=True"):
        Int4Settings(32, True, 4, "float")
    with pytest.raises(ValueError, match="zero_point: got 'half'"):
        Int4Settings(32, False, 4, "half")
    with pytest.raises(ConfigError, match="int4_zero_point"):
        SearchSpace(int4_zero_point=("fp16",))
    graph = linear_net([np.ones((64, 8), np.float32)])
    tech, ctx = matmul_nbits.MatMulNBits(), CheckContext(None, graph)
    with pytest.raises(ConfigError, match="int4_zero_point.*int4_symmetric is only true"):
        tech.check(ctx, SearchSpace(bits=(4,), int4_block=(32,), int4_zero_point=("float",)))
    with pytest.raises(ConfigError, match="int4_zero_point.*acts on MatMulNBits files only"):
        tech.check(ctx, SearchSpace(bits=(4,), int4_zero_point=("int", "float")))
    tech.check(ctx, SearchSpace(bits=(4,), int4_block=(32,), int4_symmetric=(False,), int4_zero_point=("float",)))
    with pytest.raises(ConfigError, match="int4_head_bits: got 3; choose from \\[4, 8\\]"):
        SearchSpace(int4_head_bits=(3,))
    with pytest.raises(ConfigError, match="int4_head_bits: got 8; .*no embedding tied to its LM head.*set int4_head_bits "
                                          "to 4"):
        tech.check(ctx, SearchSpace(bits=(4,), int4_block=(32,), int4_head_bits=(4, 8)))


def test_compress_takes_the_float_offset_from_the_knobs(tmp_path):
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=128, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=64, num_labels=3, pad_token_id=0)).eval()
    ids = torch.randint(1, 128, (16, 12), generator=torch.Generator().manual_seed(0))
    data = (ids, torch.ones_like(ids), torch.arange(16) % 3)
    wl = Workload("tiny-llama", model, train=data, val=data, example_input=(ids[:1], torch.ones_like(ids[:1])))
    settings = FinetuneSettings(subset_size=8, batch_size=8, bn_batches=1, calibration_size=2)
    config = CompressionConfig(0.0, 4, 0, int4_block=32, int4_symmetric=False, int4_zero_point="float")
    cand = compress(wl, config, tmp_path / "a.onnx", settings=settings)
    assert matmul_nbits.nbits_nodes(onnx.load(str(cand.onnx_path))) == 8
    assert cand.quantization["detail"] == "blocks of 32, asymmetric, float offset (min/max), default accuracy level"


def test_a_tied_head_is_stored_once_at_8_bits_and_a_q8_0_table_round_trips(tmp_path):
    """The tiny Llama's tied table put on a Q8_0 grid (d * q, q -127..127 hitting +-127 each block of 32): after
    `quantize_tied_head` the graph holds one 8-bit table (GatherBlockQuantized + MatMulNBits) and, at accuracy level
    0, gives the FP32 logits."""
    from lepton_search.techniques._tied_head import quantize_tied_head
    from lepton_search.techniques.export import to_onnx
    from lepton_search.workloads.hf import HFLogits

    from .test_matmul_nbits import tiny_causal_llama

    model = tiny_causal_llama()
    rng = np.random.default_rng(2)
    table = model.model.embed_tokens.weight.detach().numpy()
    q = rng.integers(-127, 128, table.shape)
    q[:, ::32] = 127
    d = rng.uniform(0.001, 0.02, (table.shape[0], table.shape[1] // 32, 1)).astype(np.float16).astype(np.float32)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.from_numpy((q.reshape(d.shape[0], -1, 32) * d).reshape(table.shape)))
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    graph = to_onnx(HFLogits.wrap(model, n_inputs=2), (ids, torch.ones_like(ids)), tmp_path / "fp32.onnx",
                    names=["input_ids", "attention_mask"])
    out = quantize_tied_head(graph, block=32, accuracy_level=0)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("GatherBlockQuantized") == 1 and ops.count("MatMulNBits") == 1
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    copies = {name for name, w in inits.items() if w.shape in (table.shape, table.shape[::-1])
              and np.array_equal(w.reshape(-1, 64) if w.shape == table.shape else w.T, model.model.embed_tokens.weight
                                 .detach().numpy())}
    assert len(copies) == 2 and not copies & {i.name for i in out.graph.initializer}  # both FP32 copies are gone
    import onnxruntime as ort

    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())}
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
                 for m in (graph, out))
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    with pytest.raises(ConfigError, match="no embedding Gather tied"):
        quantize_tied_head(linear_net([np.ones((64, 8), np.float32)]))
