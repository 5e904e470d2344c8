"""Re-targeting a stored study: latency re-scored on another target, nothing retrained."""

from __future__ import annotations

import shutil

import pytest
from picking_study import picking_study

from lepton_search import load
from lepton_search.cli import main
from lepton_search.errors import ConfigError
from lepton_search.results.retarget import retarget


def test_retarget_rescores_without_training(tmp_path, monkeypatch):
    # A copy of the shared study (database and artifacts beside it): retarget adds studies to its storage.
    storage, artifacts = picking_study()
    shutil.copy(storage.removeprefix("sqlite:///"), tmp_path / "study.db")
    shutil.copytree(artifacts, tmp_path / "study_artifacts")
    sqlite_url = f"sqlite:///{tmp_path / 'study.db'}"
    src = load(sqlite_url, "pick")

    def no_training(*args, **kwargs):
        raise AssertionError("retarget must not train")

    from lepton_search import training
    from lepton_search.techniques import finetune

    monkeypatch.setattr(finetune, "distill", no_training)
    monkeypatch.setattr(finetune, "fit", no_training)  # the one training loop, as finetune imported it
    monkeypatch.setattr(training, "fit", no_training)
    new = retarget(sqlite_url, "pick", "nvidia-t4")
    assert new.study.study_name == "pick.nvidia-t4"
    old = {t.number: t for t in src.study.trials if t.state.name == "COMPLETE"}
    got = [t for t in new.study.trials if t.state.name == "COMPLETE"]
    assert len(got) == len(old) == 4
    for t in got:
        before = old[t.user_attrs["retargeted_from"]["trial"]]
        assert t.user_attrs["accuracy"] == before.user_attrs["accuracy"]
        assert t.user_attrs["latency_source"] == "predicted" and before.user_attrs["latency_source"] == "measured"
        assert t.values[1] == t.user_attrs["latency_ms"] != before.user_attrs["latency_ms"]
        assert t.user_attrs["speedup"] == pytest.approx(new.base.latency_ms / t.user_attrs["latency_ms"])
    assert not new.pareto().empty
    with pytest.raises(ConfigError, match="exists already"):
        retarget(sqlite_url, "pick", "nvidia-t4")
    assert main(["retarget", "--storage", sqlite_url, "--study", "pick", "--target", "raspberry-pi-4",
                 "--new-study", "pi"]) == 0
    assert main(["retarget", "--storage", sqlite_url, "--study", "nope", "--target", "nvidia-t4"]) == 2
