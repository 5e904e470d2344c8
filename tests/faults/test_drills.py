"""The database and disk drills of experiments/fault_drills.py, as tests (PostgreSQL restarts; a full tmpfs), and a
restart while `lepton-search run` sets up. The 16-worker drill is tests/faults/test_many_workers.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from pathlib import Path

import pytest

from lepton_search.testing.drills import DRILL_SPACE, DRILL_TRIALS, cli, env, restartable_cluster, tally
from lepton_search.testing.postgres import pg_bin_dir

pytestmark = pytest.mark.slow
_SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "fault_drills.py"


def _drills():
    spec = importlib.util.spec_from_file_location("fault_drills", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs_postgres() -> None:
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server not installed: apt-get install -y postgresql")
    import psycopg2  # noqa: F401 - in the lock: missing fails, not skips


def test_postgres_restarted_three_times_under_four_workers():
    _needs_postgres()
    row = _drills().run_drill("db_restarts")
    assert row["exit_codes"] == [0, 0, 0, 0], row.get("failed_logs")
    assert (row["complete"], row["lost"], row["duplicated"], row["running"]) == (DRILL_TRIALS, 0, 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small tmpfs needs root (CI runs as root)")
def test_a_full_artifact_filesystem_fails_the_trial_and_the_study_resumes():
    row = _drills().run_drill("disk_full")
    assert row["exit_codes"] == [2, 0] and row["half_written_files"] == 0
    assert (row["complete"], row["lost"], row["duplicated"], row["running"]) == (4, 0, 0, 0)
    assert "no space left" in row["what happened"]


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert proc.poll() is None, f"run exited {proc.returncode} before {text!r}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout_s:.0f}s: {log.read_text()[-2000:]}"
        time.sleep(0.1)


def test_a_postgres_restart_while_run_sets_up_is_waited_for(tmp_path):
    """The server is down when `run` starts (it waits), comes up, and restarts again as the search opens its study
    and measures the base: the search reaches its count with nothing lost."""
    _needs_postgres()
    (tmp_path / "space.yaml").write_text(DRILL_SPACE.replace("trials: 11", "trials: 3"))
    log = tmp_path / "run.log"
    with restartable_cluster() as pg:
        pg.stop()
        with open(log, "w") as sink:
            proc = subprocess.Popen(cli("run", str(tmp_path / "space.yaml"), "--workload", "digits-mlp", "--storage",
                                        pg.url, "--study", "s", "--artifacts", str(tmp_path / "art"),
                                        "--db-retries", "30", "--db-max-wait-s", "1"),
                                    env=env(), stdout=sink, stderr=subprocess.STDOUT)
            _wait_for_line(log, "unreachable", proc)
            pg.start()
            _wait_for_line(log, "fine-tune recipe", proc)  # `prepare` is done: the study is opened next
            pg.restart(down_s=3.0)
            assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
        text = log.read_text()
        t = tally(pg.url, "s", 3)
    assert text.count("answers again") >= 2 and "Traceback" not in text, text[-3000:]  # both downs waited for
    assert (t.complete, t.lost, t.duplicated, t.running, t.waiting) == (3, 0, 0, 0, 0)


def test_a_database_that_refuses_the_login_is_one_line_at_once(tmp_path, monkeypatch, capsys):
    """A live PostgreSQL that answers "database ... does not exist": no reconnect bound is waited out (it was ~2 min)."""
    _needs_postgres()
    from lepton_search.cli import main
    from lepton_search.testing.postgres import throwaway_cluster

    monkeypatch.chdir(tmp_path)
    with throwaway_cluster() as url:
        start = time.monotonic()
        assert main(["run", "--storage", url.replace("/lepton", "/nosuchdb"), "--trials", "1"]) == 2
        assert time.monotonic() - start < 30
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --storage: got ") and err.endswith(
        'the database refused the login (database "nosuchdb" does not exist); check the user, password and database '
        "name in the URL")
