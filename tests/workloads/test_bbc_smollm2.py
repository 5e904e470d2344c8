"""bbc-smollm2 (slow: loads the 135M SmolLM2, a dequantized 4-bit model, ~1 min the first time): a tiny version
builds and validates as task "lm", its exported file scores a finite perplexity, MatMulNBits at block 128 stays within
1.5x of it, and a window above the model's context is one line."""

from __future__ import annotations

import math

import onnx
import pytest

from lepton_search.errors import ConfigError
from lepton_search.evaluate.accuracy import onnx_accuracy
from lepton_search.techniques import matmul_nbits, quantize
from lepton_search.techniques.export import to_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("gguf")
    from lepton_search import workloads

    return workloads.get("bbc-smollm2", seq_len=32, limit=3, windows=8)


def test_a_tiny_bbc_smollm2_scores_and_takes_matmulnbits(smol, tmp_path):
    smol.validate()
    assert smol.task.name == "lm" and type(smol.model.model).__name__ == "LlamaForCausalLM"
    assert smol.model.model.config.num_hidden_layers == 30 and "dequantized" in smol.info["pretrained"]
    # a cold cache returns the model rebuilt from it too, not the GGUF loader's (its quantization record makes
    # save_pretrained refuse it, and the builder reads a saved folder)
    assert "quantization_config" not in smol.model.model.config.to_dict() and smol.generation_graph == "builder"
    graph = to_onnx(smol.model, smol.example_args, tmp_path / "fp32.onnx", names=smol.input_names)
    base = smol.task.display(onnx_accuracy(tmp_path / "fp32.onnx", smol, "val").accuracy)
    assert math.isfinite(base) and 1 < base < 1000
    plan = quantize.plan_for(4).with_settings(matmul_nbits.Int4Settings(128, True, 4))
    out, route = quantize.quantize_with_route(graph, 4, plan=plan)
    assert route.detail == "blocks of 128, symmetric, accuracy level 4"
    assert matmul_nbits.nbits_nodes(out) == 30 * 7 + 1
    onnx.save(out, tmp_path / "int4.onnx")
    assert (tmp_path / "int4.onnx").stat().st_size < 0.5 * (tmp_path / "fp32.onnx").stat().st_size
    int4 = smol.task.display(onnx_accuracy(tmp_path / "int4.onnx", smol, "val").accuracy)
    # measured here (3 articles a split, 8 windows of 32 tokens): FP32 84.26, block 128 symmetric level 4 112.12
    # (+33%: the LM head / tied embedding is quantized too; recovering that is the search's job, not this test's)
    assert int4 < 1.5 * base, (base, int4)


def test_a_window_above_the_context_is_one_line():
    pytest.importorskip("gguf")
    from lepton_search import workloads

    with pytest.raises(ConfigError, match="workload.seq_len.*the model's context"):
        workloads.get("bbc-smollm2", seq_len=100_000, limit=1)
