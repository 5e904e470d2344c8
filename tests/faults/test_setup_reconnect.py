"""Setup waits for the database as the trial loop does: every SQL statement `search()` and a worker's `init` /
`run_worker` send before their first trial fails once, as a restarting server drops it, and each still reaches its
count with nothing lost, duplicated or left RUNNING (fast: SQLite, the drop raised from SQLAlchemy's own hook)."""

from __future__ import annotations

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from lepton_search import SearchSpace, search
from lepton_search import study as study_module
from lepton_search.faults import ReconnectSettings
from lepton_search.testing.drills import tally
from lepton_search.workers import init_study, run_worker

# each retry gets one statement further (the next one fails in turn): a unit of many statements needs many tries
FAST = ReconnectSettings(retries=60, first_wait_s=0.01, max_wait_s=0.01)
SPACE = SearchSpace(prune_ratio=(0.0, 0.25), bits=(32, 8), finetune_epochs=(0, 0), anchors="off",
                    early_reject="off", sampler="random", trials=3)


class RestartingDatabase:
    """Until the trial loop starts, each distinct SQL statement fails the first time it is sent ("server closed
    the connection unexpectedly"); sent again, it goes through. The statement is never sent: its transaction is
    rolled back, as a server that restarts rolls back the transactions it had."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.setup = True

    def drop(self, conn, cursor, statement, parameters, context, executemany) -> None:
        # Not the schema's DDL: pysqlite commits each CREATE on its own, so a dropped CREATE INDEX would leave a
        # table without its unique index (PostgreSQL's DDL is one transaction, retried whole by `open_storage`).
        if self.setup and statement not in self.seen and not statement.lstrip().upper().startswith("CREATE"):
            self.seen.add(statement)
            raise OperationalError(statement, parameters, Exception("server closed the connection unexpectedly"))


@pytest.fixture()
def restarting(monkeypatch):
    """Setup ends where the trial loop starts (`study.run_trials`, which settles a trial the database dropped)."""
    db = RestartingDatabase()
    loop = study_module.run_trials

    def run_trials(*args, **kwargs):
        db.setup = False
        return loop(*args, **kwargs)

    monkeypatch.setattr(study_module, "run_trials", run_trials)
    event.listen(Engine, "before_cursor_execute", db.drop)
    yield db
    event.remove(Engine, "before_cursor_execute", db.drop)


def test_search_setup_waits_for_each_storage_call(tmp_path, restarting, caplog):
    url = f"sqlite:///{tmp_path / 's.db'}"
    search("digits-mlp", SPACE, storage=url, study_name="s", artifacts=tmp_path / "art", remeasure=False,
           verbose=False, reconnect=FAST, callbacks=[])
    assert len(restarting.seen) >= 10 and not restarting.setup  # many statements dropped, then trials ran
    t = tally(url, "s", 3)
    assert (t.complete, t.lost, t.duplicated, t.running, t.waiting, t.failed) == (3, 0, 0, 0, 0, 0)
    assert "answers again" in caplog.text


def test_worker_init_and_join_wait_for_each_storage_call(tmp_path, restarting):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    init_study(url, "w", SPACE, workload="digits-mlp", artifacts=tmp_path / "art", reconnect=FAST, verbose=False)
    assert len(restarting.seen) >= 10
    restarting.seen.clear()  # the worker's setup sends many of init's statements: each fails once more
    report = run_worker(url, "w", reconnect=FAST, verbose=False)
    assert len(restarting.seen) >= 5 and not restarting.setup
    assert len(report.completed) == 3
    t = tally(url, "w", 3)
    assert (t.complete, t.lost, t.duplicated, t.running, t.waiting, t.failed) == (3, 0, 0, 0, 0, 0)
