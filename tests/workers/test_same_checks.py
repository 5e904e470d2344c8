"""`init_study` (`lepton-search init`) refuses and narrows exactly what `search()` does: both run `study.prepare`
before a study is touched, and workers search the space init stored."""

from __future__ import annotations

import optuna
import pytest
from worker_workloads import minilm_slice, plain_rnn

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.workers import BASE_STATE_ATTR, REQUESTED_SPACE_ATTR, init_study, run_worker

GLOBAL_ON_ENCODER = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), prune_method="global", bits=(32,),
                                finetune_epochs=(0, 0))
# bits x epochs: three models beyond the base (unpruned FP32 untrained is the base, not a trial)
RNN_SPACE = SearchSpace(prune_ratio=(0.0, 0.6, 0.3), bits=(32, 8), finetune_epochs=(0, 1), trials=2)


@pytest.mark.parametrize("path", ["search", "init"])
def test_global_pruning_on_an_encoder_is_refused_on_both_paths(path, sqlite_url, tmp_path):
    with pytest.raises(ConfigError, match=r"prune_method.*global.*use 'structured'"):
        if path == "search":
            search(minilm_slice(), GLOBAL_ON_ENCODER, n_trials=2, storage=sqlite_url, verbose=False)
        else:
            init_study(sqlite_url, "enc", GLOBAL_ON_ENCODER, workload="worker_workloads:minilm_slice",
                       artifacts=tmp_path / "art", verbose=False)
    stored = optuna.get_all_study_names(storage=sqlite_url)
    assert stored == []  # refused before any study was created or base measured


@pytest.mark.parametrize("path", ["search", "init"])
def test_a_price_objective_without_a_priced_target_is_refused_on_both_paths(path, sqlite_url, tmp_path):
    space = SearchSpace(objectives=("accuracy", "usd_per_million_inferences"))
    with pytest.raises(ConfigError, match="target: .*has no usd_per_hour"):
        if path == "search":
            search("digits-mlp", space, n_trials=1, storage=sqlite_url, verbose=False)
        else:
            init_study(sqlite_url, "usd", space, workload="digits-mlp", artifacts=tmp_path / "art", verbose=False)


@pytest.mark.slow  # init + a worker's 2 trials (~15 s)
def test_init_narrows_the_knobs_search_narrows_and_workers_search_that_space(sqlite_url, tmp_path):
    art = tmp_path / "art"
    with pytest.warns(UserWarning, match="prune_ratio fixed at 0"):
        study = init_study(sqlite_url, "rnn", RNN_SPACE, workload="worker_workloads:plain_rnn", artifacts=art,
                           verbose=False)
    with pytest.warns(UserWarning, match="prune_ratio fixed at 0"):
        searched = search(plain_rnn(), RNN_SPACE, n_trials=1, storage=sqlite_url, study_name="rnn-search",
                          verbose=False, callbacks=[], remeasure=False)
    # the same space stored by both paths
    assert study.user_attrs["space"] == searched.study.user_attrs["space"]
    assert study.user_attrs["space"]["knobs"]["prune_ratio"] == {"low": 0.0, "high": 0.0, "step": 0.3}
    assert study.user_attrs[REQUESTED_SPACE_ATTR] == RNN_SPACE.to_dict()
    # init again with the space as asked: already initialised, nothing re-measured
    again = init_study(sqlite_url, "rnn", RNN_SPACE, workload="worker_workloads:plain_rnn", artifacts=art,
                       verbose=False)
    assert again.user_attrs[BASE_STATE_ATTR] == study.user_attrs[BASE_STATE_ATTR]
    with pytest.raises(ConfigError, match="study_name: got 'rnn'; .*its own space; use a new study name"):
        init_study(sqlite_url, "rnn", SearchSpace(bits=(32,), finetune_epochs=(0, 0)),
                   workload="worker_workloads:plain_rnn", artifacts=art, verbose=False)
    report = run_worker(sqlite_url, "rnn", n_trials=2, artifacts=art, verbose=False)
    assert len(report.completed) == 2
    trials = optuna.load_study(study_name="rnn", storage=sqlite_url).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert {t.user_attrs["config"]["prune_ratio"] for t in trials} == {0.0}
