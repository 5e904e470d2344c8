"""Re-targeting a stored study: latency re-scored on another target, nothing retrained."""

from __future__ import annotations

import pytest

from lepton_search import SearchSpace, search
from lepton_search.cli import main
from lepton_search.errors import ConfigError
from lepton_search.results.retarget import retarget


def test_retarget_rescores_without_training(digits_mlp, sqlite_url, monkeypatch):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 1), trials=3)
    src = search(digits_mlp, space, n_trials=3, storage=sqlite_url, study_name="src", verbose=False)

    def no_training(*args, **kwargs):
        raise AssertionError("retarget must not train")

    from lepton_search import training
    from lepton_search.techniques import finetune

    monkeypatch.setattr(finetune, "distill", no_training)
    monkeypatch.setattr(finetune, "fit", no_training)  # the one training loop, as finetune imported it
    monkeypatch.setattr(training, "fit", no_training)
    new = retarget(sqlite_url, "src", "nvidia-t4")
    assert new.study.study_name == "src.nvidia-t4"
    old = {t.number: t for t in src.study.trials if t.state.name == "COMPLETE"}
    got = [t for t in new.study.trials if t.state.name == "COMPLETE"]
    assert len(got) == len(old) == 3
    for t in got:
        before = old[t.user_attrs["retargeted_from"]["trial"]]
        assert t.user_attrs["accuracy"] == before.user_attrs["accuracy"]
        assert t.user_attrs["latency_source"] == "predicted" and before.user_attrs["latency_source"] == "measured"
        assert t.values[1] == t.user_attrs["latency_ms"] != before.user_attrs["latency_ms"]
        assert t.user_attrs["speedup"] == pytest.approx(new.base.latency_ms / t.user_attrs["latency_ms"])
    assert not new.pareto().empty
    with pytest.raises(ConfigError, match="exists already"):
        retarget(sqlite_url, "src", "nvidia-t4")
    assert main(["retarget", "--storage", sqlite_url, "--study", "src", "--target", "raspberry-pi-4",
                 "--new-study", "pi"]) == 0
    assert main(["retarget", "--storage", sqlite_url, "--study", "nope", "--target", "nvidia-t4"]) == 2
