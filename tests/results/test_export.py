"""export: model.onnx + config.json + MODEL_CARD.md, re-checked in ONNX Runtime; per-trial artifacts and notes."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from picking_study import picking_study

from lepton_search import ConfigError, load
from lepton_search.cli import main
from lepton_search.latency import save_inputs
from lepton_search.results import release
from lepton_search.results.notes import ROLE_NOTE_HEADER, trial_note
from lepton_search.results.release import RecheckError, run_on_samples
from lepton_search.space import KNOBS


@pytest.fixture(scope="module")
def result():
    storage, _ = picking_study()
    return load(storage, "pick")


@pytest.fixture(scope="module")
def pareto_trial(result) -> int:
    return int(result.pareto()["number"].iloc[0])


def test_export_runs_in_ort_with_stored_accuracy(result, pareto_trial, digits_cnn, tmp_path):
    path = result.export(pareto_trial, tmp_path / "deploy", workload=digits_cnn)
    assert sorted(p.name for p in path.parent.iterdir()) == ["MODEL_CARD.md", "config.json", "model.onnx",
                                                             "sample_inputs.npz"]  # what latency was timed on
    # independent of lepton_search.evaluate: a plain ORT session over the validation tensors
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = digits_cnn.val
    logits = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
    stored = result.study.trials[pareto_trial].user_attrs
    assert int((logits.argmax(1) == y.numpy()).sum()) == stored["val_correct"]
    config = json.loads((path.parent / "config.json").read_text())
    assert config["recheck"]["status"] == "passed" and config["recheck"]["val_correct"] == stored["val_correct"]
    assert set(config["config"]) == {knob.name for knob in KNOBS}  # every knob, also the ones not searched
    for key in ("accuracy", "accuracy_drop_pts", "latency_ms", "latency_p90_ms", "size_mb", "finetune_seconds", "speedup"):
        assert config["metrics"][key] == stored[key]
    assert config["seed"] == 0 and config["versions"]["onnxruntime"] == ort.__version__
    assert config["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    card = (path.parent / "MODEL_CARD.md").read_text()
    for row in ("| validation accuracy |", "| latency p50 |", "| size |", "| fine-tune time |", "Re-check on export: passed"):
        assert row in card


def test_export_without_workload_runs_the_file_on_stored_samples_and_says_what_it_checked(result, pareto_trial, tmp_path):
    with pytest.warns(UserWarning, match=r"accuracy not re-checked: pass workload="):
        path = result.export(pareto_trial, tmp_path)
    checked = json.loads((path.parent / "config.json").read_text())["recheck"]
    n = len(next(iter(np.load(path.parent / "sample_inputs.npz").values())))
    assert checked["status"] == "ran" and checked["samples"] == n > 0
    assert f"on {n} stored samples" in checked["detail"] and "accuracy not re-checked" in checked["detail"]
    assert "Re-check on export: ran (" in (path.parent / "MODEL_CARD.md").read_text()


def _graph(node: onnx.NodeProto, out_shape: list) -> onnx.ModelProto:
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("node", "out_shape", "status", "says"), [
    (onnx.helper.make_node("Relu", ["x"], ["y"]), ["batch", 3], "ran", "outputs finite with batch 4"),
    (onnx.helper.make_node("Log", ["x"], ["y"]), ["batch", 3], "FAILED", "y has non-finite values"),
    (onnx.helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1), [1, 1], "FAILED", "y has shape (1, 1) (expected batch 4)"),
])
def test_run_on_samples_checks_finite_outputs_of_the_expected_batch(node, out_shape, status, says, tmp_path):
    onnx.save(_graph(node, out_shape), str(tmp_path / "m.onnx"))
    samples = save_inputs(tmp_path / "s.npz", {"x": np.array([[1.0, -2.0, 3.0]] * 4, dtype=np.float32)})
    checked = run_on_samples(tmp_path / "m.onnx", samples)
    assert checked["status"] == status and says in checked["detail"], checked
    assert run_on_samples(tmp_path / "m.onnx", None)["status"] == "skipped"
    wrong_input = save_inputs(tmp_path / "w.npz", {"z": np.zeros((4, 3), dtype=np.float32)})
    assert run_on_samples(tmp_path / "m.onnx", wrong_input)["status"] == "FAILED"


def test_export_without_workload_raises_when_the_file_fails_on_its_samples(result, pareto_trial, tmp_path, monkeypatch):
    broken = {"status": "FAILED", "detail": "y has non-finite values", "samples": 2}
    monkeypatch.setattr(release, "run_on_samples", lambda *_: broken)
    with pytest.raises(RecheckError, match="fails its run on stored samples"):
        result.export(pareto_trial, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["recheck"] == broken


def test_recheck_catches_a_mismatch(result, pareto_trial, digits_cnn, tmp_path):
    x, y = digits_cnn.val
    shuffled = dataclasses.replace(digits_cnn, val=(x, torch.roll(y, 1)))  # same name, wrong labels
    with pytest.raises(RecheckError, match="does not reproduce"):
        result.export(pareto_trial, tmp_path, workload=shuffled)
    assert json.loads((tmp_path / "config.json").read_text())["recheck"]["status"] == "FAILED"
    with pytest.raises(ConfigError, match="was run on 'digits-cnn'"):
        result.export(pareto_trial, tmp_path, workload=dataclasses.replace(digits_cnn, name="other"))


def test_cli_export_rechecks_builtin_workload(result, pareto_trial, tmp_path, monkeypatch, capsys):
    storage, _ = picking_study()
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--storage", storage, "--study", "pick", "--trial", str(pareto_trial), "--out", "out"]) == 0
    assert "re-check in ONNX Runtime: passed" in capsys.readouterr().out
    assert main(["export", "--storage", storage, "--study", "pick", "--trial", "0", "--out", "../elsewhere"]) == 2
    assert "--out" in capsys.readouterr().err


def test_each_trial_has_config_and_card_artifacts(result):
    for t in result.study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        with result.artifact_store.open_reader(t.user_attrs["config_artifact_id"]) as fh:
            config = json.loads(fh.read())
        assert config["trial"] == t.number and config["metrics"]["accuracy"] == t.user_attrs["accuracy"]
        with result.artifact_store.open_reader(t.user_attrs["card_artifact_id"]) as fh:
            assert fh.read().decode().startswith(f"# Model card: pick trial {t.number}")


def test_pareto_trials_carry_role_notes(result):
    storage = optuna.storages.get_storage(picking_study()[0])
    roles = result.roles()
    for t in result.study.get_trials(deepcopy=False):
        note = trial_note(storage, result.study, t.number)
        if t.number in roles:
            assert note.startswith(ROLE_NOTE_HEADER) and all(r in note for r in roles[t.number])
        else:
            assert not note.startswith(ROLE_NOTE_HEADER)
