"""Budgets (max_latency_ms, min_speedup, max_size_mb) are checked on the untrained candidate: a config that
breaks one runs no training step, is stored with its reason and is infeasible for the sampler."""

from __future__ import annotations

import logging

import optuna
import pytest

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.records import DOMINATED, REJECTED, BaseRecord, trial_constraints


def _fp32_mb(workload) -> float:
    return sum(p.numel() for p in workload.model.parameters()) * 4 / 1e6


def test_over_budget_config_runs_no_training_step(digits_mlp, sqlite_url, monkeypatch, caplog):
    from lepton_search.techniques import finetune

    fits = []
    fit = finetune.fit
    monkeypatch.setattr(finetune, "fit", lambda *a, **k: fits.append(1) or fit(*a, **k))
    # the FP32 graph (the base's) is over the size budget, the FP16 graph under it
    space = SearchSpace(prune_ratio=(0.0, 0.0, 0.25), bits=(32, 16), finetune_epochs=(1, 1),
                        max_size_mb=0.75 * _fp32_mb(digits_mlp), max_accuracy_drop_pts=5.0, trials=2)
    with caplog.at_level(logging.INFO, logger="lepton_search"):
        result = search(digits_mlp, space, n_trials=2, storage=sqlite_url, study_name="b", verbose=True,
                        callbacks=[], remeasure=False)
    # what the log, trials() and the sampler say is what happened: FP32 rejected, nothing trained for it
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ") and " p50 " in r.getMessage()]
    rejected = [line for line in lines if "rejected (over budget before fine-tuning: max_size_mb missed by" in line]
    assert len(lines) == 2 and len(rejected) == 1 and " ft " not in rejected[0], lines
    complete = {t.params.get("bits", 32): t for t in result.study.get_trials() if t.state.name == "COMPLETE"}
    assert set(complete) == {32, 16}
    over, under = complete[32], complete[16]
    assert over.user_attrs[REJECTED].startswith("over budget before fine-tuning: max_size_mb missed by")
    values = trial_constraints(result.study, over)
    assert values["max_size_mb"] > 0 and "max_accuracy_drop_pts" in values
    assert over.user_attrs["finetune_seconds"] == 0 and over.system_attrs["constraints"]  # the form the dashboard reads
    assert REJECTED not in under.user_attrs and under.user_attrs["finetune_seconds"] > 0
    assert len(fits) == 1  # the FP16 config's epoch only


def test_a_space_whose_every_graph_breaks_a_budget_is_refused_before_training(digits_mlp, sqlite_url, monkeypatch):
    from lepton_search.techniques import finetune

    def no_training(*args, **kwargs):
        raise AssertionError("nothing may train in a space no graph of which meets its budgets")

    monkeypatch.setattr(finetune, "fit", no_training)
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 16), finetune_epochs=(1, 1), max_size_mb=1e-6,
                        trials=2)
    with pytest.raises(ConfigError, match=r"^constraints.max_size_mb: got 1e-06; no graph of this space meets it: "
                                          r"all 6 timed untrained before any training \(the closest, s0\.50/fp16/ft0,"):
        search(digits_mlp, space, n_trials=2, storage=sqlite_url, study_name="none", verbose=False, callbacks=[])
    study = optuna.load_study(study_name="none", storage=sqlite_url)
    assert study.trials == [] and BaseRecord.of(study) is not None  # refused before any trial; the base kept
    assert sum(k.startswith("graph_latency:") for k in study.user_attrs) == 5  # the timings stay (the base's is its own)


def test_budgets_that_fit_train_as_usual(digits_mlp, sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.0, 0.25), bits=(32,), finetune_epochs=(1, 1), max_latency_ms=1e3,
                        min_speedup=0.01, max_size_mb=100.0, trials=1)
    result = search(digits_mlp, space, n_trials=1, storage=sqlite_url, study_name="ok", verbose=False, callbacks=[])
    (t,) = [t for t in result.study.get_trials() if t.state.name == "COMPLETE"]
    assert REJECTED not in t.user_attrs and t.user_attrs["finetune_seconds"] > 0
    values = trial_constraints(result.study, t)
    assert set(values) == {"max_latency_ms", "min_speedup", "max_size_mb", DOMINATED}  # the rule is on by default
    assert t.constraints.keys() == {"0", "1", "2", "3"}  # the list form only, as the sampler reads it
    assert all(v <= 0 for v in values.values())
    assert len(result.pareto()) == 1


def test_budgets_from_yaml_and_bad_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("constraints: {max_latency_ms: 0.5, min_speedup: 2, max_size_mb: 1.5}\n")
    space = SearchSpace.from_yaml(path)
    assert (space.max_latency_ms, space.min_speedup, space.max_size_mb) == (0.5, 2, 1.5)
    with pytest.raises(ConfigError, match="constraints.min_speedup"):
        SearchSpace(min_speedup=0)
    with pytest.raises(ConfigError, match="constraints.max_latency_msx"):
        SearchSpace.from_dict({"constraints": {"max_latency_msx": 1}})


def test_search_remeasures_base_and_front_interleaved(digits_mlp, sqlite_url, tmp_path):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 0), trials=4)
    result = search(digits_mlp, space, n_trials=4, storage=sqlite_url, study_name="r", verbose=False, callbacks=[])
    again = result.study.user_attrs["front_remeasured"]
    front = result.pareto()
    assert again["repeats"] == 3 and set(again["trials"]) == {str(n) for n in front["number"]}
    for _, row in front.iterrows():
        figures = again["trials"][str(row["number"])]
        assert len(figures["runs_ms"]) == 3 and row["latency_ms_remeasured"] == min(figures["runs_ms"])
        assert row["speedup_remeasured"] == pytest.approx(again["base_latency_ms"] / row["latency_ms_remeasured"])
    result.export(int(front["number"][0]), tmp_path / "out")
    assert "Re-measured after the search" in (tmp_path / "out" / "MODEL_CARD.md").read_text()
