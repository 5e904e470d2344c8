"""The language-model task (`task="lm"`) on a tiny random causal Llama: the exported file's score, computed batch by
batch from its (batch, tokens, vocabulary) logits, is torch's own next-token cross-entropy over the split; the
distillation loss on the cached top-k is zero at the teacher and moves the student; a causal model handed the
classification task (and the reverse) is one line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lepton_search.errors import ConfigError
from lepton_search.evaluate.accuracy import onnx_accuracy
from lepton_search.tasks import IGNORE, LanguageModel
from lepton_search.techniques.export import to_onnx
from lepton_search.workloads import Workload

VOCAB, SEQ = 128, 12


def tiny_causal_llama():
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, tie_word_embeddings=True, use_cache=False)).eval()


def windows(n: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    stream = torch.randint(0, VOCAB, (n, SEQ + 1), generator=torch.Generator().manual_seed(0))
    targets = stream[:, 1:].clone()
    targets[-1, -3:] = IGNORE  # a last window shorter than the others
    return stream[:, :-1], torch.ones(n, SEQ, dtype=torch.int64), targets


@pytest.fixture(scope="module")
def lm_workload():
    data = windows()
    return Workload("tiny-lm", tiny_causal_llama(), train=data, val=data, example_input=(data[0][:1], data[1][:1]),
                    task="lm")


def test_the_files_score_is_torchs_cross_entropy_over_the_split(lm_workload, tmp_path):
    lm_workload.validate()
    ids, mask, targets = windows()
    path = tmp_path / "lm.onnx"
    to_onnx(lm_workload.model, (ids[:1], mask[:1]), path, names=lm_workload.input_names)
    got = onnx_accuracy(path, lm_workload, "val", batch_size=256)
    with torch.no_grad():
        logits = lm_workload.model(ids, mask)
    want = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=IGNORE).item()
    assert got.accuracy == pytest.approx(-want, abs=1e-4) and got.correct is None
    task = lm_workload.task
    assert task.display(got.accuracy) == pytest.approx(math.exp(want), rel=1e-4)  # perplexity
    assert math.exp(want) == pytest.approx(VOCAB, rel=0.2)  # random weights: about a uniform guess


def test_scoring_keeps_two_numbers_a_row_and_feeds_at_most_batch_limit_rows(lm_workload, tmp_path, monkeypatch):
    ids, mask, _ = windows()
    path = tmp_path / "lm.onnx"
    to_onnx(lm_workload.model, (ids[:1], mask[:1]), path, names=lm_workload.input_names)
    seen = []
    real = LanguageModel.summarize

    def summarize(self, outputs, targets):
        seen.append(outputs.shape)
        kept = real(self, outputs, targets)
        assert kept.shape == (len(outputs), 2)
        return kept

    monkeypatch.setattr(LanguageModel, "summarize", summarize)
    onnx_accuracy(path, lm_workload, "val", batch_size=256)
    assert [s[0] for s in seen] == [4, 4, 2] and all(s[1:] == (SEQ, VOCAB) for s in seen)


def test_distillation_on_the_cached_top_k():
    task = LanguageModel()
    task.top_k = 5
    torch.manual_seed(0)
    teacher = torch.randn(2, SEQ, VOCAB) * 3
    _, _, targets = windows(2)
    compact = task.compact_teacher(teacher)
    assert compact.shape == (2, SEQ, 10)
    at_teacher = task.distill_loss(teacher.clone(), compact, targets, temperature=2.0, weight=1.0)
    assert at_teacher.item() == pytest.approx(0.0, abs=1e-5)
    student = torch.zeros(2, SEQ, VOCAB, requires_grad=True)
    loss = task.distill_loss(student, compact, targets, temperature=2.0, weight=0.7)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    moved = student.grad[..., :].abs().sum(-1)
    assert torch.all(moved[targets != IGNORE] > 0) and torch.all(moved[targets == IGNORE] == 0)


def test_a_causal_model_and_a_classification_task_are_one_line_either_way():
    data = windows()
    with pytest.raises(ConfigError, match="task='lm'"):
        Workload("x", tiny_causal_llama(), train=data, val=data,
                 example_input=(data[0][:1], data[1][:1])).validate()
    import transformers

    clf = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, num_labels=3, pad_token_id=0))
    labels = (data[0][:, 0] % 3, )
    with pytest.raises(ConfigError, match="task='classification'"):
        Workload("y", clf, train=(*data[:2], *labels), val=(*data[:2], *labels),
                 example_input=(data[0][:1], data[1][:1]), task="lm").validate()
    assert np.isfinite(LanguageModel().display(-800.0))


def test_seq_len_on_a_language_model_is_refused_in_one_line_before_any_study(lm_workload, tmp_path):
    import optuna

    from lepton_search import SearchSpace, search

    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(ConfigError, match="knobs.seq_len: got 4; would cut a language model's inputs but not its"):
        search(lm_workload, SearchSpace(seq_len=(0, 4), bits=(32,)), n_trials=1, storage=url, study_name="lm",
               verbose=False)
    assert optuna.get_all_study_names(url) == []


def test_a_generation_workload_scores_and_times_its_cached_graph(tmp_path):
    """generation=True: compress exports past key/values and MatMulNBits acts on that graph; its score is the plain
    file's (an empty-past prefill); host-cpu's latency is ms per decoded token, with prefill and tokens/s recorded."""
    import onnx

    from lepton_search.candidate import compress
    from lepton_search.evaluate.measurement import measure_onnx
    from lepton_search.latency import HostCpuLatency
    from lepton_search.space import CompressionConfig, FinetuneSettings

    data = windows()
    wl = Workload("tiny-gen", tiny_causal_llama(), train=data, val=data, example_input=(data[0][:1], data[1][:1]),
                  task="lm", generation=True)
    plain = tmp_path / "plain.onnx"
    to_onnx(wl.model, (data[0][:1], data[1][:1]), plain, names=wl.input_names)
    settings = FinetuneSettings(subset_size=8, batch_size=8, bn_batches=1, calibration_size=2)
    fp32 = compress(wl, CompressionConfig(0.0, 32, 0), tmp_path / "fp32.onnx", settings=settings)
    graph = onnx.load(str(fp32.onnx_path))
    assert [i.name for i in graph.graph.input][2:4] == ["position_ids", "past_key_values.0.key"]
    assert onnx_accuracy(fp32.onnx_path, wl, "val").accuracy == pytest.approx(onnx_accuracy(plain, wl, "val").accuracy,
                                                                              abs=1e-5)
    int4 = compress(wl, CompressionConfig(0.0, 4, 0, int4_block=32, int4_accuracy_level=4), tmp_path / "int4.onnx",
                    settings=settings)
    assert sum(n.op_type == "MatMulNBits" for n in onnx.load(str(int4.onnx_path)).graph.node) == 15  # 7 a layer, head
    meas = measure_onnx(int4.onnx_path, wl, HostCpuLatency(), samples=wl.sample_inputs())
    gen = meas.generation
    assert gen["unit"].startswith("ms per decoded token") and gen["prompt_tokens"] == 64 and gen["new_tokens"] == 32
    assert meas.latency_ms == pytest.approx(1e3 / gen["decode_tokens_per_s"]) and 0 < gen["prefill_ms"] < 1e3
    assert math.exp(-meas.accuracy) == pytest.approx(VOCAB, rel=0.3)  # still a (random) language model


def test_the_card_of_a_generation_file_says_its_latency_unit_and_tokens_per_second():
    from lepton_search.results.card import model_card

    gen = {"prefill_ms": 90.0, "ttft_ms": 91.0, "decode_tokens_per_s": 100.0, "prompt_tokens": 64, "new_tokens": 32}
    card = model_card({"study": "s", "trial": 0, "workload": "bbc-smollm2", "seed": 0, "config": {"bits": 4},
                       "base": {"latency_ms": 25.0, "generation": {**gen, "ttft_ms": 182.0, "decode_tokens_per_s": 40.0}},
                       "metrics": {"latency_ms": 10.0, "generation": gen}})
    assert "ms per decoded token" in card and "prefill of 64 tokens, 32 decoded" in card
    assert "| decode tokens/s | 40 | 100 | x2.50 |" in card and "| time to first token | 182 ms | 91 ms | speed-up x2.00 |" in card
    plain = model_card({"study": "s", "trial": 0, "workload": "w", "seed": 0, "config": {"bits": 32}, "base": {},
                        "metrics": {}})
    assert "decoded token" not in plain


def test_an_exported_generation_file_runs_on_the_stored_samples_with_an_empty_past(tmp_path):
    """`export` without a workload runs the file on the study's stored samples: a generation file takes past
    key/values too, fed empty (it failed with 'Required inputs ... past_key_values.0.key ... are missing')."""
    from lepton_search.candidate import compress
    from lepton_search.latency import save_inputs
    from lepton_search.results.release import run_on_samples
    from lepton_search.space import CompressionConfig, FinetuneSettings

    data = windows()
    wl = Workload("tiny-gen", tiny_causal_llama(), train=data, val=data, example_input=(data[0][:1], data[1][:1]),
                  task="lm", generation=True)
    cand = compress(wl, CompressionConfig(0.0, 32, 0), tmp_path / "gen.onnx",
                    settings=FinetuneSettings(subset_size=8, batch_size=8, bn_batches=1, calibration_size=2))
    samples = save_inputs(tmp_path / "samples.npz", wl.sample_inputs())
    checked = run_on_samples(cand.onnx_path, samples)
    assert checked["status"] == "ran", checked
