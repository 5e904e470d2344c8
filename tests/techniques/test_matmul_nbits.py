"""Weight-only INT4 through ONNX Runtime's MatMulNBits (`techniques.matmul_nbits`, the `int4_matmulnbits` route): on
a tiny random Llama the graph holds MatMulNBits, ONNX Runtime runs it on CPU, the logits stay near FP32's, the file
shrinks, and the stored weights decode (by numpy, from the packed bytes) to within half a step of the FP32 ones (a step where the grid clips)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lepton_search.candidate import compress
from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace
from lepton_search.techniques import matmul_nbits, quantize
from lepton_search.techniques.export import check_traceable, to_onnx
from lepton_search.techniques.matmul_nbits import Int4Settings
from lepton_search.techniques.stages import CheckContext
from lepton_search.workloads import Workload
from lepton_search.workloads.hf import HFLogits

VOCAB, HIDDEN, FFN, SEQ = 128, 64, 128, 12


def tiny_causal_llama(layers: int = 2):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=FFN,
                                      max_position_embeddings=64, tie_word_embeddings=True, use_cache=False)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def llama_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("nbits") / "fp32.onnx"
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    graph = to_onnx(HFLogits.wrap(tiny_causal_llama(), n_inputs=2), (ids, torch.ones_like(ids)), path,
                    names=["input_ids", "attention_mask"])
    return graph, path, {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())}


def run(model_or_path, feeds):
    import onnxruntime as ort

    blob = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def nbits_plan(block=32, symmetric=True, level=4):
    return quantize.plan_for(4).with_settings(Int4Settings(block, symmetric, level))


@pytest.mark.parametrize(("block", "symmetric", "level"), [(32, True, 4), (64, False, 0)])
def test_the_graph_holds_matmulnbits_runs_on_cpu_stays_near_fp32_and_shrinks(llama_graph, tmp_path, block, symmetric,
                                                                            level):
    graph, path, feeds = llama_graph
    out, route = quantize.quantize_with_route(graph, 4, plan=nbits_plan(block, symmetric, level))
    linears = 2 * 7 + 1  # q, k, v, o, gate, up, down per block, and the LM head
    assert matmul_nbits.nbits_nodes(out) == linears
    assert route.tool == "onnxruntime MatMulNBits" and route.operators == ("MatMul",) and route.bits == 4
    assert f"blocks of {block}" in route.summary()
    onnx.save(out, tmp_path / "int4.onnx")
    assert (tmp_path / "int4.onnx").stat().st_size < 0.6 * path.stat().st_size  # the FP32 embedding table remains
    want, got = run(str(path), feeds), run(str(tmp_path / "int4.onnx"), feeds)
    assert got.shape == want.shape == (2, SEQ, VOCAB)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_stored_weights_decode_to_within_half_a_step_by_numpy(llama_graph):
    """An independent reference: unpack MatMulNBits' nibbles and scales with numpy and compare with the FP32 weight."""
    graph, _, _ = llama_graph
    out, _ = quantize.quantize_with_route(graph, 4, plan=nbits_plan(32, True, 4))
    before = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    node = next(n for n in out.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: a.i for a in node.attribute}
    k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
    packed, scales = inits[node.input[1]], inits[node.input[2]].reshape(n, -1)
    low, high = packed & 0x0F, packed >> 4  # two weights a byte, the low nibble first
    q = np.stack([low, high], axis=-1).reshape(n, -1)[:, :k].astype(np.float32) - 8  # symmetric: zero point 8
    decoded = (q.reshape(n, -1, block) * scales[:, :, None]).reshape(n, k)
    original = before[node.input[1].removesuffix("_Q4")].T  # the quantizer names B's blob <B>_Q4
    step = scales.repeat(block, axis=1)[:, :k]  # a block's scale carries the sign of its largest weight
    inside = (original / step >= -8.5) & (original / step <= 7.5)  # the grid is -8..7: +8 steps clip to 7
    err = np.abs(decoded - original)
    assert np.all(err[inside] <= np.abs(step[inside]) / 2 + 1e-6) and np.all(err <= np.abs(step) + 1e-6)


def test_checks_refuse_what_cannot_act_in_one_line(llama_graph, digits_mlp, tmp_path):
    graph, _, _ = llama_graph
    ctx = CheckContext(None, graph)
    tech = matmul_nbits.MatMulNBits()
    with pytest.raises(ConfigError, match="int4_block.*acts on 4-bit files only"):
        tech.check(ctx, SearchSpace(bits=(32, 8), int4_block=(32,)))
    with pytest.raises(ConfigError, match="int4_block.*wider than the model's narrowest MatMul input \\(64\\)"):
        tech.check(ctx, SearchSpace(bits=(4,), int4_block=(32, 128)))
    with pytest.raises(ConfigError, match="int4_symmetric.*acts on MatMulNBits files only"):
        tech.check(ctx, SearchSpace(bits=(4,), int4_symmetric=(True, False)))
    with pytest.raises(ConfigError, match="int4_block"):
        SearchSpace(int4_block=(48,))  # the knob's own check: a block size MatMulNBits does not take
    assert not tech.check(ctx, SearchSpace(bits=(32, 4), int4_block=(0, 32, 64))).notes
    gemm_only = check_traceable(digits_mlp.model, digits_mlp.example_args, tmp_path)
    with pytest.raises(ConfigError, match="has none"):
        tech.check(CheckContext(digits_mlp, gemm_only), SearchSpace(bits=(4,), int4_block=(32,)))


def test_a_plan_takes_the_settings_its_route_takes():
    assert nbits_plan().route == "int4_matmulnbits" and not nbits_plan().static
    with pytest.raises(ValueError, match="takes Int4Settings"):
        quantize.QuantizationPlan("int4_matmulnbits", 4)
    with pytest.raises(ValueError, match="takes no settings"):
        quantize.QuantizationPlan("int4_qdq", 4, Int4Settings(32, True, 4))
    with pytest.raises(ValueError, match="block_size"):
        Int4Settings(48, True, 4)


def test_compress_takes_the_route_from_the_knobs(tmp_path):
    """Through `compress` on a tiny Llama classifier: bits 4 with int4_block makes MatMulNBits; without, INT4 QDQ."""
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=FFN, max_position_embeddings=64, num_labels=3, pad_token_id=0)).eval()
    ids = torch.randint(1, VOCAB, (16, SEQ), generator=torch.Generator().manual_seed(0))
    data = (ids, torch.ones_like(ids), torch.arange(16) % 3)
    wl = Workload("tiny-llama", model, train=data, val=data, example_input=(ids[:1], torch.ones_like(ids[:1])))
    settings = FinetuneSettings(subset_size=8, batch_size=8, bn_batches=1, calibration_size=2)
    nbits = compress(wl, CompressionConfig(0.0, 4, 0, int4_block=32, int4_accuracy_level=4), tmp_path / "a.onnx",
                     settings=settings)
    graph = onnx.load(str(nbits.onnx_path))
    assert matmul_nbits.nbits_nodes(graph) == 8  # 7 projections and the score head
    assert nbits.quantization["detail"] == "blocks of 32, symmetric, accuracy level 4"
    qdq = compress(wl, CompressionConfig(0.0, 4, 0), tmp_path / "b.onnx", settings=settings)
    assert not matmul_nbits.nbits_nodes(onnx.load(str(qdq.onnx_path))) and qdq.quantization["tool"] == "lepton_search"
