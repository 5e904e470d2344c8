"""Search options: the GP sampler on a constrained 2-objective study, sampled prune methods, test accuracy
recorded beside (never as) an objective, and a wall-clock budget."""

from __future__ import annotations

import time

import optuna
import pytest

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.records import BaseRecord


@pytest.mark.slow
def test_gp_sampler_with_sampled_prune_methods_records_test_accuracy(digits_mlp, sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), prune_method=["structured", "global"], bits=(32, 8),
                        finetune_epochs=(0, 0), max_accuracy_drop_pts=2.0, sampler="gp", trials=8)
    result = search(digits_mlp, space, n_trials=8, storage=sqlite_url, study_name="gp", verbose=False, callbacks=[])
    assert type(result.study.sampler).__name__ == "GPSampler"
    trials = result.trials()
    complete = trials[trials.state == "COMPLETE"]
    assert len(complete) == 8 and set(complete.prune_method) <= {"structured", "global"}
    records = result.records()
    assert all(0.5 < r.test_accuracy <= 1.0 for r in records.values())
    assert result.objectives == ["accuracy", "latency_ms"]  # test accuracy never reaches the sampler


def test_timeout_stops_between_trials(digits_mlp, sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1), trials=12)
    # a budget shorter than one trial is refused before the first: the base's own measuring is the least a trial does
    with pytest.raises(ConfigError, match=r"^timeout: got 1e-06; is shorter than one trial: the base's export, "
                                          r"evaluation and timing alone took [0-9.e+-]+ s here"):
        search(digits_mlp, space, n_trials=12, storage=sqlite_url, study_name="t", verbose=False, callbacks=[],
               timeout=1e-6)
    least = BaseRecord.of(optuna.load_study(study_name="t", storage=sqlite_url)).measure_seconds
    assert least > 0
    start = time.perf_counter()
    result = search(digits_mlp, space, n_trials=12, storage=sqlite_url, study_name="t", verbose=False,
                    callbacks=[], timeout=least)  # the same study resumed, its base as stored
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert 1 <= len(done) < 11  # the first trial starts; it stops between trials once the budget is spent
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("bad", [0, -1, "10", True])
def test_timeout_must_be_positive_seconds(digits_mlp, sqlite_url, bad):
    with pytest.raises(ConfigError, match="timeout"):
        search(digits_mlp, SearchSpace(), storage=sqlite_url, timeout=bad, verbose=False)
