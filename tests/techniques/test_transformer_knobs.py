"""`seq_len` and `layers` act on a Transformer: the exported file takes fewer tokens / has fewer layers, its
accuracy and latency are measured there, and values the model cannot take are refused before any training."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
import transformers  # noqa: F401 - in the lock ([nlp]): missing, it fails here instead of skipping
from hf_workload import tiny_bert_workload

from lepton_search import FinetuneSettings, SearchSpace, search
from lepton_search.candidate import compress, input_transform_for
from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig
from lepton_search.techniques import prune_transformer
from lepton_search.techniques.checkpoints import CheckpointStore

SETTINGS = FinetuneSettings(subset_size="all", batch_size=16, calibration_size=8, bn_batches=1)


def _layer_count(graph: onnx.ModelProto) -> int:
    """Encoder layers in an exported BERT: one Softmax (attention) per layer."""
    return sum(node.op_type == "Softmax" for node in graph.graph.node)


def test_seq_len_and_layers_shape_the_exported_file(tmp_path):
    wl = tiny_bert_workload(num_layers=2)
    config = CompressionConfig(prune_ratio=0.0, bits=32, finetune_epochs=1, seq_len=4, layers=1)
    cand = compress(wl, config, tmp_path / "c.onnx", settings=SETTINGS)
    graph = onnx.load(str(cand.onnx_path))
    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"] and all(d[1] == 4 for d in dims)
    assert _layer_count(graph) == 1 and cand.macs_ratio < 0.5
    assert [i["shape"] for i in cand.inputs] == [[4], [4]]  # the samples latency is timed on: 4 tokens each
    out = ort.InferenceSession(str(cand.onnx_path)).run(None, dict(cand.sample_inputs))[0]
    assert out.shape == (len(cand.sample_inputs["input_ids"]), 3) and np.isfinite(out).all()
    assert wl.model.model.config.num_hidden_layers == 2  # the user's model is left whole


def test_the_student_fine_tunes_on_the_cut_inputs_and_the_teacher_on_the_whole(tmp_path, monkeypatch):
    from lepton_search.techniques import finetune

    wl = tiny_bert_workload()
    seen = []
    real = finetune.forward

    def spy(model, x):
        seen.append((model.training, x[0].shape[1]))
        return real(model, x)

    monkeypatch.setattr(finetune, "forward", spy)
    compress(wl, CompressionConfig(0.0, 32, 1, seq_len=4), tmp_path / "c.onnx", settings=SETTINGS)
    assert {n for training, n in seen if training} == {4} and (False, 8) in seen  # student 4 tokens, teacher 8


def test_new_knobs_key_their_checkpoints(tmp_path):
    wl = tiny_bert_workload()
    store = CheckpointStore(tmp_path / "ckpt")
    for seq_len in (4, 6):
        compress(wl, CompressionConfig(0.0, 32, 1, seq_len=seq_len), tmp_path / "c.onnx", settings=SETTINGS,
                 checkpoints=store)
    assert len([p for p in (tmp_path / "ckpt").iterdir() if p.is_dir()]) == 2
    again = compress(wl, CompressionConfig(0.0, 32, 1, seq_len=4), tmp_path / "c.onnx", settings=SETTINGS,
                     checkpoints=store)
    assert again.finetune_epochs_reused == 1


@pytest.mark.parametrize(("knobs", "message"), [
    ({"seq_len": (4, 9)}, "knobs.seq_len: got 9; is above the model's 8 tokens; give 1..8 (0: all)"),
    ({"layers": (1, 3)}, "knobs.layers: got 3; is more than the model's 2 encoder layers; give 1..2 (0: all)"),
    ({"seq_len": -1}, "seq_len: got -1; give a whole number of tokens >= 1"),
])
def test_values_the_model_cannot_take_are_refused_before_training(knobs, message, tmp_path, monkeypatch):
    from lepton_search.techniques import finetune

    monkeypatch.setattr(finetune, "fit", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ConfigError) as err:
        search(tiny_bert_workload(), SearchSpace(finetune=SETTINGS, **knobs), n_trials=1,
               storage=f"sqlite:///{tmp_path / 's.db'}", study_name="bad")
    assert message in str(err.value)
    stored = optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 's.db'}") if (tmp_path / "s.db").exists() else []
    assert "bad" not in [summary.study_name for summary in stored]  # refused before the study was made


def test_knobs_on_a_model_without_tokens_or_encoder_layers_are_refused(digits_mlp, tmp_path):
    for knobs, field in (({"seq_len": 16}, "knobs.seq_len"), ({"layers": 2}, "knobs.layers")):
        with pytest.raises(ConfigError, match=field):
            search(digits_mlp, SearchSpace(**knobs), n_trials=1, storage=f"sqlite:///{tmp_path / 's.db'}",
                   study_name="mlp")


def test_keep_layers_drops_the_top_layers():
    model = tiny_bert_workload(num_layers=2).model
    kept = prune_transformer.keep_layers(copy.deepcopy(model), 1)
    assert len(prune_transformer.encoder_layers(kept)) == 1
    assert kept.model.bert.encoder.layer[0].attention.self.query.weight.equal(
        model.model.bert.encoder.layer[0].attention.self.query.weight)
    assert input_transform_for(tiny_bert_workload(), CompressionConfig(0.0, 32, 0)) is None
    with torch.no_grad():
        kept(torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))


def test_the_head_refit_brings_a_cut_student_to_its_teacher():
    from lepton_search.tasks import get_task
    from lepton_search.techniques import finetune
    from lepton_search.training import forward

    wl = tiny_bert_workload(num_layers=2)
    teacher = finetune.frozen_copy(wl.model)
    student = prune_transformer.keep_layers(copy.deepcopy(wl.model), 1)
    torch.nn.init.normal_(student.model.classifier.weight, std=1.0)  # a head far from the teacher's
    view = lambda xb: tuple(x[:, :4] for x in xb)  # the seq_len=4 view
    batches = list(wl.loader("train", batch_size=16))

    def loss() -> float:  # the distillation loss the refit minimises, over the whole split
        ids, mask, y = (torch.cat(parts) for parts in zip(*batches))
        with torch.no_grad():
            return float(get_task(None).distill_loss(forward(student, view((ids, mask))), forward(teacher, (ids, mask)),
                                                     y, temperature=4.0, weight=0.7))

    before = loss()
    assert finetune.refit_head(student, teacher, batches, student_view=view) == 48
    assert loss() < 0.8 * before
    assert student.model.classifier.weight.shape == teacher.model.classifier.weight.shape


def test_the_head_is_refitted_where_a_transformer_loses_layers_or_when_asked(digits_mlp):
    from lepton_search.techniques.recovery import refits_head

    bert = tiny_bert_workload().model
    assert refits_head(SETTINGS, CompressionConfig(0.0, 8, 0, layers=1), bert)
    assert not refits_head(SETTINGS, CompressionConfig(0.0, 8, 0, seq_len=4), bert)
    assert not refits_head(SETTINGS, CompressionConfig(0.5, 8, 0), digits_mlp.model)
    on = FinetuneSettings(head_refit="on")
    assert refits_head(on, CompressionConfig(0.5, 8, 0), digits_mlp.model)
    assert not refits_head(on, CompressionConfig(0.0, 8, 0), digits_mlp.model)  # nothing changed: nothing to refit
