"""SIGKILL mid-trial, resume at once: the killed config completes and nothing is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from lepton_search import SearchSpace, search
from lepton_search.records import OWNER, RETRY_OF, read_config
from lepton_search.study import TRIAL_DELAY_ENV, fail_dead_trials, this_process

SPACE = {"prune_ratio": (0.0, 0.5, 0.5), "bits": (32, 8), "finetune_epochs": (0, 0), "trials": 3, "sampler": "random"}


@pytest.mark.slow
def test_killed_trial_is_failed_and_retried_at_once_on_resume(digits_mlp, tmp_path):
    url = f"sqlite:///{tmp_path / 'z.db'}"
    script = ("from lepton_search import SearchSpace, search\n"
              f"search('digits-mlp', SearchSpace(**{SPACE!r}), n_trials=3, storage={url!r}, study_name='z', verbose=False)\n")
    env = {**os.environ, TRIAL_DELAY_ENV: "600"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600  # the child imports torch and measures the base first: slow on a busy host
        running: list[optuna.trial.FrozenTrial] = []
        while time.time() < deadline and not running:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="z", storage=url)
            except KeyError:
                continue
            running = [t for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
                       if OWNER in t.user_attrs and t.params]
        assert running, "the child never started a trial"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = running[0]

    result = search(digits_mlp, SearchSpace(**SPACE), n_trials=3, storage=url, study_name="z", verbose=False)
    trials = result.study.get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert "process died" in trials[killed.number].user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == killed.params
    assert len({tuple(read_config(t.user_attrs).values()) for t in trials if t.state.name == "COMPLETE"}) == 3


def test_a_live_or_foreign_owner_is_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=url, study_name="o")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    mine = study.ask(dist)
    mine.set_user_attr(OWNER, this_process())
    other = study.ask(dist)
    other.set_user_attr(OWNER, {"host": "another-host", "pid": 1, "start": "0"})
    dead = study.ask(dist)
    dead.set_user_attr(OWNER, {**this_process(), "start": "-1"})  # same pid, another process: it was reused
    assert fail_dead_trials(study, url) == [dead.number]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["RUNNING", "RUNNING", "FAIL", "WAITING"]
