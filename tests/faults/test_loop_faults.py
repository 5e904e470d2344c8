"""The trial loop's own handling of a lost database and a full disk (fast: a toy objective, SQLite)."""

from __future__ import annotations

import errno

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from lepton_search import records
from lepton_search.faults import DatabaseUnavailable, DiskFull, ReconnectSettings, is_connection_lost
from lepton_search.study import n_complete, run_trials

FAST = ReconnectSettings(retries=2, first_wait_s=0.01, max_wait_s=0.01)


def _lost() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def test_a_trial_whose_connection_dropped_is_failed_and_run_again_once(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'l.db'}")
    seen: list[int] = []

    def trial(t: optuna.Trial) -> float:
        x = t.suggest_int("x", 0, 9)
        seen.append(x)
        if len(seen) == 1:
            raise _lost()
        return float(x)

    assert run_trials(study, trial, 3, done=lambda: n_complete(study), reconnect=FAST) == 3
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == 0]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == trials[0].params
    assert n_complete(study) == 3 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_the_database_going_away_again_while_a_trial_is_settled_is_waited_for(tmp_path, monkeypatch):
    """The db_restarts drill restarts PostgreSQL 3 times 2 s apart: a worker that had waited for the first restart
    met the next one while failing and re-queuing its trial (`_settle`'s reads) and exited 1 (CI, a newcomer run)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'g.db'}")
    seen: list[int] = []

    def trial(t: optuna.Trial) -> float:
        seen.append(t.suggest_int("x", 0, 9))
        if len(seen) == 1:
            raise _lost()
        return float(seen[-1])

    real, calls = study.get_trials, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # done(), done() after the wait, then the settle's first read: the database is away
            raise _lost()
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "get_trials", flaky)
    assert run_trials(study, trial, 3, done=lambda: n_complete(study), reconnect=FAST) == 3
    trials = real()
    retry = [t for t in trials if t.user_attrs.get(records.RETRY_OF) == 0]
    assert trials[0].state.name == "FAIL" and len(retry) == 1 and retry[0].state.name == "COMPLETE"
    assert n_complete(study) == 3 and not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_a_database_that_stays_away_stops_in_one_line(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}")
    calls = {"n": 0}

    def done() -> int:
        calls["n"] += 1
        raise _lost()

    with pytest.raises(DatabaseUnavailable, match=r"^storage: got .*did not answer .*nothing is lost") as err:
        run_trials(study, lambda t: 0.0, 2, done=done, reconnect=FAST)
    assert "\n" not in str(err.value)
    assert is_connection_lost(_lost()) and not is_connection_lost(ValueError("database is locked"))


def test_a_full_disk_fails_the_trial_queues_it_and_stops(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'd.db'}")

    def trial(t: optuna.Trial) -> float:
        t.suggest_int("x", 0, 9)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "art" / "x.onnx"))

    with pytest.raises(DiskFull, match=r"^artifacts: got .*no space left"):
        run_trials(study, trial, 2, done=lambda: n_complete(study))
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"]  # failed with the reason, its config queued for the resume


def test_a_trial_another_worker_failed_as_stale_meanwhile_does_not_stop_the_loop(tmp_path):
    """A busy host starves the heartbeat thread; another worker fails the trial as stale while it still runs; its end
    is refused ("Cannot tell a FAIL trial.") and the loop goes on to its count."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = optuna.create_study(storage=url, study_name="h")
    other = optuna.load_study(study_name="h", storage=url)  # the other worker's handle

    def trial(t: optuna.Trial) -> float:
        x = t.suggest_int("x", 0, 9)
        if t.number == 0:
            records.fail_running(other, url, 0, "stale: no heartbeat")
        return float(x)

    assert run_trials(study, trial, 2, done=lambda: n_complete(study), reconnect=FAST) == 2
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_a_refused_login_is_one_line_at_once_not_a_wait():
    """PostgreSQL answered and refused (a wrong password): waiting cannot help, so no reconnect bound is waited."""
    from lepton_search.errors import ConfigError
    from lepton_search.faults import answered

    calls = {"n": 0}

    def connect():
        calls["n"] += 1
        raise OperationalError("connect", {}, Exception('connection to server at "db" (10.0.0.5), port 5432 failed: '
                                                        'FATAL:  password authentication failed for user "lepton"'))

    slow = ReconnectSettings(retries=8, first_wait_s=30.0, max_wait_s=30.0)
    with pytest.raises(ConfigError, match=r'^storage: got .*; the database refused the login \(.*password '
                                          r'authentication failed for user "lepton"\); check the user, password') as err:
        answered(connect, slow, "postgresql://lepton:***@db/study")
    assert calls["n"] == 1 and "\n" not in str(err.value)
    assert not is_connection_lost(err.value) and is_connection_lost(_lost())


def test_the_final_remeasure_waits_for_the_database(digits_mlp, tmp_path, monkeypatch):
    from lepton_search import SearchSpace, api, search

    real, calls = api.remeasure_front, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise _lost()
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "remeasure_front", flaky)
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 0), trials=2)
    result = search(digits_mlp, space, n_trials=2, storage=f"sqlite:///{tmp_path / 'r.db'}", verbose=False,
                    callbacks=[], reconnect=FAST)
    assert calls["n"] == 2 and result.study.user_attrs["front_remeasured"]["repeats"] == 3
