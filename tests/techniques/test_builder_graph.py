"""`Workload.generation_graph="builder"`: a generation file made by ONNX Runtime GenAI's model builder (fused:
GroupQueryAttention, one q/k/v MatMul) from the (pruned) torch model, on a tiny random causal Llama: the engine
compresses, scores and times it like its own export, its score is the unfused file's, MatMulNBits acts on it, a
dropped-layer model builds at its new depth, and what the builder cannot take is one line before any training.
Slow: each build runs the builder in a subprocess (~9 s)."""

from __future__ import annotations

import copy
import math

import onnx
import pytest

from lepton_search.candidate import compress
from lepton_search.errors import ConfigError
from lepton_search.evaluate.accuracy import onnx_accuracy
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.techniques.prune_transformer import drop_layers
from lepton_search.workloads import Workload
from tests.test_lm_task import VOCAB, windows
from tests.test_lm_task import tiny_causal_llama as head_size_8

pytestmark = pytest.mark.slow


def tiny_causal_llama(context: int = 128):
    """test_lm_task's tiny Llama at head size 16 (GroupQueryAttention takes multiples of 16), its context above the
    timing's 64 + 32 tokens."""
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=context, tie_word_embeddings=True, use_cache=False)).eval()


SETTINGS = FinetuneSettings(subset_size=8, batch_size=8, bn_batches=1, calibration_size=2)


def workload(model=None, graph: str = "builder") -> Workload:
    data = windows()
    return Workload("tiny-gen", model or tiny_causal_llama(), train=data, val=data,
                    example_input=(data[0][:1], data[1][:1]), task="lm", generation=True, generation_graph=graph)


def test_the_builders_graph_scores_as_our_export_and_takes_matmulnbits(tmp_path):
    from lepton_search.evaluate.measurement import measure_onnx
    from lepton_search.latency import HostCpuLatency

    ours = compress(workload(graph="torch"), CompressionConfig(0.0, 32, 0), tmp_path / "torch.onnx", settings=SETTINGS)
    wl = workload()
    fp32 = compress(wl, CompressionConfig(0.0, 32, 0), tmp_path / "builder.onnx", settings=SETTINGS)
    graph = onnx.load(str(fp32.onnx_path))
    ops = {n.op_type for n in graph.graph.node}
    assert "GroupQueryAttention" in ops and "position_ids" not in [i.name for i in graph.graph.input]
    past = graph.graph.input[2].type.tensor_type.shape.dim
    assert graph.graph.input[2].name == "past_key_values.0.key" and past[3].dim_value == 16  # head size, concrete
    assert onnx_accuracy(fp32.onnx_path, wl, "val").accuracy == pytest.approx(
        onnx_accuracy(ours.onnx_path, wl, "val").accuracy, abs=1e-4)
    int4 = compress(wl, CompressionConfig(0.0, 4, 0, int4_block=16, int4_accuracy_level=4, int4_head_bits=8),
                    tmp_path / "int4.onnx", settings=SETTINGS)
    nodes = onnx.load(str(int4.onnx_path)).graph.node
    assert sum(n.op_type == "MatMulNBits" for n in nodes) == 2 * 5 + 1  # fused q/k/v, o, gate, up, down; the head
    # the builder's tied table (the head's weight, the embedding a Gather of its Transpose) stored once at 8 bits
    assert [n.op_type for n in nodes].count("GatherBlockQuantized") == 1 and "Transpose" not in {n.op_type for n in nodes}
    assert int4.quantization["detail"] == "blocks of 16, symmetric, accuracy level 4, tied embedding and LM head 8-bit"
    meas = measure_onnx(int4.onnx_path, wl, HostCpuLatency(), samples=wl.sample_inputs())
    assert meas.latency_ms == pytest.approx(1e3 / meas.generation["decode_tokens_per_s"])
    assert math.exp(-meas.accuracy) == pytest.approx(VOCAB, rel=0.3)


def test_a_model_with_a_layer_dropped_builds_at_its_depth(tmp_path):
    model = drop_layers(copy.deepcopy(tiny_causal_llama()), [0])
    cand = compress(workload(model), CompressionConfig(0.0, 32, 0), tmp_path / "one.onnx", settings=SETTINGS)
    graph = onnx.load(str(cand.onnx_path))
    assert sum(n.op_type == "GroupQueryAttention" for n in graph.graph.node) == 1
    assert [i.name for i in graph.graph.input][2:] == ["past_key_values.0.key", "past_key_values.0.value"]


def test_what_the_builder_cannot_take_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"workload.generation_graph: got 'onnx'; give one of \['torch', 'builder'\]"):
        workload(graph="onnx")
    with pytest.raises(ConfigError, match="generation_graph: got 'builder'; .*generation=False: set generation=True"):
        data = windows()
        Workload("x", tiny_causal_llama(), train=data, val=data, example_input=(data[0][:1], data[1][:1]), task="lm",
                 generation_graph="builder")
    with pytest.raises(ConfigError, match="head size is 8 and the builder's GroupQueryAttention takes multiples of 16"):
        compress(workload(head_size_8()), CompressionConfig(0.0, 32, 0), tmp_path / "x.onnx", settings=SETTINGS)
    with pytest.raises(ConfigError, match="context is 64 tokens and a file is timed over 64 [+] 32"):
        compress(workload(tiny_causal_llama(context=64)), CompressionConfig(0.0, 32, 0), tmp_path / "x.onnx",
                 settings=SETTINGS)
    model = tiny_causal_llama()
    mlp = model.model.layers[1].mlp
    for name in ("gate_proj", "up_proj"):  # the second block's FFN narrowed alone: the builder's config holds one width
        old = getattr(mlp, name)
        setattr(mlp, name, type(old)(old.in_features, 32, bias=False))
    mlp.down_proj = type(mlp.down_proj)(32, mlp.down_proj.out_features, bias=False)
    with pytest.raises(ConfigError, match=r"model.layers: got \[32, 64\]; the builder's graph needs one FFN width"):
        compress(workload(model), CompressionConfig(0.0, 32, 0), tmp_path / "x.onnx", settings=SETTINGS)
