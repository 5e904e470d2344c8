"""Heartbeats: a silent RUNNING trial is failed and retried with the same params, at most max_retry times."""

from __future__ import annotations

import time

import optuna
import pytest

from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig
from lepton_search.storage import HeartbeatSettings, open_storage
from lepton_search.study import find_duplicate

DIST = {"prune_ratio": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.25)}


def _start(study: optuna.Study) -> optuna.Trial:
    """Ask for a trial and give it one heartbeat, then fall silent (as a SIGKILLed worker does)."""
    trial = study.ask(DIST)
    study._storage.record_heartbeat(trial._trial_id)
    return trial


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.slow  # crash drill: waits out real heartbeats (~8 s)
def test_stale_trial_is_retried_with_same_params_at_most_max_retry_times(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", HeartbeatSettings(interval_s=1, grace_period_s=2, max_retry=1))
    study = optuna.create_study(storage=storage, study_name="h")
    first = _start(study)
    time.sleep(3.5)  # SQLite timestamps have whole seconds
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL
    assert study.get_trials()[1].state == optuna.trial.TrialState.WAITING

    retry = _start(study)  # ask() pops the queued retry
    assert retry.params == first.params
    assert storage.get_trial_system_attrs(retry._trial_id)["retry_history"] == [first.number]
    time.sleep(3.5)  # SQLite timestamps have whole seconds
    optuna.storages.fail_stale_trials(study)

    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.FAIL]  # no third copy: max_retry=1


def test_a_retry_is_not_a_duplicate_of_its_ancestor_but_of_any_other_trial():
    study = optuna.create_study()
    config = CompressionConfig(0.25, 8, 1)
    ancestor, other, retry = (study.ask() for _ in range(3))
    for t in (ancestor, other):
        t.set_user_attr("config", config.as_dict())
    assert find_duplicate(study, config, retry.number) == ancestor.number
    assert find_duplicate(study, config, retry.number, ignore=[ancestor.number]) == other.number
    study.tell(other, state=optuna.trial.TrialState.FAIL)
    assert find_duplicate(study, config, retry.number, ignore=[ancestor.number]) is None


def test_a_queued_retry_blocks_a_fresh_trial_with_the_same_config():
    study = optuna.create_study()
    config = CompressionConfig(0.5, 32, 0)
    fresh = study.ask()
    study.enqueue_trial({"prune_ratio": 0.5}, user_attrs={"config": config.as_dict()})
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    assert find_duplicate(study, config, fresh.number) == queued.number


@pytest.mark.parametrize("kwargs, field", [
    ({"interval_s": 0}, "interval_s"),
    ({"interval_s": 10, "grace_period_s": 10}, "grace_period_s"),
    ({"max_retry": -1}, "max_retry"),
])
def test_heartbeat_settings_are_validated_and_name_their_parameter(kwargs, field):
    with pytest.raises(ConfigError) as err:
        HeartbeatSettings(**kwargs)
    assert err.value.field == field and "--" not in str(err.value)  # API users never read CLI flags


def test_of_two_trials_running_one_config_the_later_yields():
    """Two workers sampled the same config at once; each wrote it before looking: only the lower number runs."""
    study = optuna.create_study()
    config = CompressionConfig(0.25, 8, 1)
    first, second = study.ask(), study.ask()
    for t in (first, second):
        t.set_user_attr("config", config.as_dict())
    assert find_duplicate(study, config, first.number) is None
    assert find_duplicate(study, config, second.number) == first.number
