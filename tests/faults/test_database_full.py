"""SQLite's own "database or disk is full": one line naming the database and the fix, the trial settled, and the
same command resumes once there is room. The full disk is SQLite's `PRAGMA max_page_count` set, on every connection
the search opens, to the pages the file has: SQLite then refuses to grow it exactly as on a full disk (SQLITE_FULL)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import event
from sqlalchemy.pool import Pool

from lepton_search.cli import main
from lepton_search.faults import as_disk_full, is_connection_lost, is_disk_full
from lepton_search.testing.drills import DRILL_SPACE, tally

SPACE = DRILL_SPACE.replace("finetune_epochs: {low: 0, high: 1}", "finetune_epochs: 0")


class FullDatabase:
    """While on, every new SQLite connection may not grow its file past the pages it has when it connects."""

    @staticmethod
    def _cap(dbapi_connection, _record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    def on(self) -> None:
        event.listen(Pool, "connect", self._cap)

    def off(self) -> None:
        if event.contains(Pool, "connect", self._cap):
            event.remove(Pool, "connect", self._cap)


@pytest.fixture()
def full_database():
    full = FullDatabase()
    yield full
    full.off()


def test_sqlite_full_is_disk_full_not_a_lost_connection():
    from sqlalchemy.exc import OperationalError

    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(full) and not is_connection_lost(full)
    line = str(as_disk_full(full, "sqlite:///s.db"))
    assert line.startswith("storage: got 'sqlite:///s.db'; no space left") and "free space there" in line


def test_a_full_sqlite_database_stops_in_one_line_and_resumes_once_freed(tmp_path, capsys, full_database):
    space, url = tmp_path / "space.yaml", f"sqlite:///{tmp_path / 's.db'}"
    space.write_text(SPACE)
    run = ["run", str(space), "--workload", "digits-mlp", "--storage", url, "--study", "s",
           "--artifacts", str(tmp_path / "art")]
    assert main([*run, "--trials", "1"]) == 0
    capsys.readouterr()
    full_database.on()
    assert main([*run, "--trials", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: --storage: got '{url}'; no space left on its device"), err[-5:]
    assert "database or disk is full" in err[-1] and "free space there" in err[-1]
    assert not any("Traceback" in line for line in err)
    stopped = tally(url, "s", 4)
    assert stopped.complete == 1 and stopped.running == 0  # the trial in flight was settled, not left RUNNING
    full_database.off()  # space freed
    assert main([*run, "--trials", "4"]) == 0
    final = tally(url, "s", 4)
    assert (final.complete, final.lost, final.duplicated, final.running, final.waiting) == (4, 0, 0, 0, 0)
