"""Generation export: a tiny Llama with past key/values, loaded by ONNX Runtime GenAI, greedy tokens as torch's;
the decode timing on it; its bad inputs in one line each."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from lepton_search.errors import ConfigError
from lepton_search.latency.decode import Decoder, measure_decode
from lepton_search.techniques import generation
from lepton_search.techniques.matmul_nbits import Int4Settings, nbits_nodes, quantize_weights

transformers = pytest.importorskip("transformers")


def tiny_llama(*, layers: int = 2, kv_heads: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return transformers.LlamaForCausalLM(config).eval()


def torch_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    model = tiny_llama()
    path = generation.export_for_generation(model, tmp_path_factory.mktemp("gen"))
    return model, path


PROMPT = [5, 17, 33, 8, 61, 12, 40]


def test_layout_in_graph_and_config(folder):
    _, path = folder
    graph = onnx.load(str(path))
    names = [i.name for i in graph.graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]
    assert [o.name for o in graph.graph.output] == ["logits"] + [f"present.{i}.{k}" for i in range(2)
                                                                   for k in ("key", "value")]
    config = json.loads((path.parent / "genai_config.json").read_text())["model"]
    assert (config["decoder"]["num_key_value_heads"], config["decoder"]["head_size"]) == (2, 16)


def test_ort_loop_greedy_matches_torch_and_timing_is_sane(folder):
    model, path = folder
    timing = measure_decode(path, PROMPT, new_tokens=6, threads=1, repeats=1, context=64)
    assert list(timing.tokens) == torch_greedy(model, PROMPT, 6)
    assert 0 < timing.decode_ms_per_token < 1000 and timing.prefill_ms > 0
    assert timing.decode_tokens_per_s == pytest.approx(1e3 / timing.decode_ms_per_token)
    assert timing.ttft_ms >= timing.prefill_ms


def test_empty_past_prefill_is_the_plain_forward(folder):
    model, path = folder
    logits, present = Decoder(path).step(PROMPT, None, 0)
    with torch.no_grad():
        ref = model(torch.tensor([PROMPT])).logits.numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)
    assert present[0].shape == (1, 2, len(PROMPT), 16)


def test_onnxruntime_genai_generates_torch_tokens(folder):
    og = pytest.importorskip("onnxruntime_genai")
    model, path = folder
    params = og.GeneratorParams(og_model := og.Model(str(path.parent)))
    params.set_search_options(max_length=len(PROMPT) + 6, do_sample=False)
    generator = og.Generator(og_model, params)
    generator.append_tokens(np.asarray([PROMPT], np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    assert out == torch_greedy(model, PROMPT, 6)


def test_pruned_kv_heads_and_layers_export_and_int4(tmp_path):
    model = tiny_llama(layers=3, kv_heads=1)  # one key/value group: what pruning by group leaves
    del model.model.layers[1]  # a dropped middle layer leaves layer_idx 0, 2: renumbered while exporting
    model.config.num_hidden_layers = 2
    path = generation.export_for_generation(model, tmp_path / "pruned")
    layout = generation.GenerationLayout.of(model)
    assert (layout.layers, layout.kv_heads) == (2, 1)
    assert model.model.layers[1].self_attn.layer_idx == 2  # as it was
    graph = quantize_weights(onnx.load(str(path)), Int4Settings(32, True, 4))
    assert nbits_nodes(graph) >= 2 * 7  # q, k, v, o, gate, up, down a layer
    onnx.save(graph, str(path))
    assert list(measure_decode(path, PROMPT, new_tokens=3, repeats=1).tokens)  # still runs


def test_bad_inputs_one_line(folder):
    _, path = folder
    with pytest.raises(ConfigError, match="latency.prompt_tokens.*context") as err:
        measure_decode(path, list(range(60)), new_tokens=8, context=64)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="generation export takes a causal LM"):
        generation.GenerationLayout.of(torch.nn.Linear(2, 2))


def test_isolated_run_reports_its_own_peak_memory(folder):
    from lepton_search.latency.decode import measure_isolated, peak_rss_mb

    big = np.ones(200_000_000 // 8)  # ~200 MB held here: a child's own peak must not include it
    timing = measure_isolated(folder[1], PROMPT, new_tokens=3, repeats=1)
    assert 10 < timing.peak_rss_mb < peak_rss_mb() - 150, (timing.peak_rss_mb, peak_rss_mb(), big.size)


def test_a_block_wider_than_the_model_is_one_line(folder):
    graph = onnx.load(str(folder[1]))  # hidden 64: the narrowest MatMul input
    with pytest.raises(ConfigError, match=r"knobs.int4_block: got 128; .*narrowest MatMul input \(64\).*at most 64") as err:
        quantize_weights(graph, Int4Settings(128, True, 4))
    assert "\n" not in str(err.value)
