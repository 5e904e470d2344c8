"""`matmul_nbits.quantize_genai_folder` on a graph laid out as ONNX Runtime GenAI's model builder lays out its FP32
CPU build: the embedding a Gather of the LM head weight's Transpose (one tied table), a fused q/k/v MatMul (weights
concatenated along the output columns). Checked against numpy on the dequantized weights (an independent
reference): the tied table becomes one 8-bit table with its Transpose gone, and a fused weight's blocks run along K
in each column, as if each part were quantized alone."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from lepton_search.errors import ConfigError
from lepton_search.techniques._int4_offset import block_min_max
from lepton_search.techniques._tied_head import absmax_blocks
from lepton_search.techniques.matmul_nbits import Int4Settings, nbits_nodes, quantize_genai_folder

VOCAB, HIDDEN, Q, KV = 40, 64, 64, 32


def builder_like(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """input_ids -> Gather(Transpose(head)) -> fused q/k/v MatMul -> its first HIDDEN columns -> LM head MatMul."""
    weights = {"lm_head.MatMul.weight": rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32),
               "qkv_proj.MatMul.weight": rng.standard_normal((HIDDEN, Q + 2 * KV)).astype(np.float32) * 0.1}
    nodes = [helper.make_node("Transpose", ["lm_head.MatMul.weight"], ["table"], name="embed/Transpose", perm=[1, 0]),
             helper.make_node("Gather", ["table", "input_ids"], ["h"], name="embed/Gather"),
             helper.make_node("MatMul", ["h", "qkv_proj.MatMul.weight"], ["qkv"], name="qkv/MatMul"),
             helper.make_node("Slice", ["qkv", "start", "end", "axis"], ["q"], name="q/Slice"),
             helper.make_node("MatMul", ["q", "lm_head.MatMul.weight"], ["logits"], name="lm_head/MatMul")]
    inits = [numpy_helper.from_array(w, n) for n, w in weights.items()] + [
        numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("start", 0), ("end", Q), ("axis", 2))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
                              [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("logits", "qkv")],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def offset_dequantized(w: np.ndarray, block: int) -> np.ndarray:
    q, scale, offset = block_min_max(w, block)
    return (scale[:, :, None] * q + offset[:, :, None]).reshape(w.shape[1], -1)[:, :w.shape[0]].T


def test_the_builders_tied_table_and_fused_qkv(tmp_path):
    rng = np.random.default_rng(0)
    model, weights = builder_like(rng)
    source = tmp_path / "builder-fp32"
    source.mkdir()
    onnx.save(model, str(source / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    (source / "genai_config.json").write_text(json.dumps({"model": {"type": "llama"}}))
    out = quantize_genai_folder(source, tmp_path / "fused", Int4Settings(32, False, 0, "float", 8))
    assert sorted(p.name for p in out.parent.iterdir()) == ["genai_config.json", "model.onnx"]
    graph = onnx.load(str(out))
    ops = [n.op_type for n in graph.graph.node]
    assert "Transpose" not in ops and ops.count("GatherBlockQuantized") == 1 and nbits_nodes(graph) == 2
    assert not {i.name for i in graph.graph.initializer} & set(weights)  # no FP32 copy of either weight is left
    import onnxruntime as ort

    ids = rng.integers(0, VOCAB, (1, 7))
    logits, qkv = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})
    q8, scale = absmax_blocks(np.ascontiguousarray(weights["lm_head.MatMul.weight"].T), 32)
    table = ((q8.astype(np.float32) - 128) * scale[..., None]).reshape(VOCAB, HIDDEN)  # 8-bit, blocks along hidden
    fused = weights["qkv_proj.MatMul.weight"]
    parts = np.concatenate([offset_dequantized(fused[:, :Q], 32), offset_dequantized(fused[:, Q:], 32)], axis=1)
    np.testing.assert_allclose(offset_dequantized(fused, 32), parts)  # per column: the parts' own blocks
    want_qkv = table[ids] @ parts
    np.testing.assert_allclose(qkv, want_qkv, atol=1e-4 * np.abs(want_qkv).max())
    want = qkv[..., :Q] @ table.T
    np.testing.assert_allclose(logits, want, atol=1e-4 * np.abs(want).max())


def test_bad_input_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="has no model.onnx"):
        quantize_genai_folder(tmp_path, tmp_path / "out", Int4Settings(32, True, 4))
    with pytest.raises(ValueError, match=r"Int4Settings.head_bits: got 2; one of \[4, 8\]"):
        Int4Settings(32, True, 4, head_bits=2)
