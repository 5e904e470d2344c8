"""The database and disk drills of experiments/fault_drills.py, as tests (PostgreSQL restarts; a full tmpfs).

The 16-worker drill (random kills and joins) stays in the script only: about 4.5 minutes on a 2-core host, over
what one test may take here; `experiments/fault_drills.py many_workers` runs it and its JSON records it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

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
    assert (row["complete"], row["lost"], row["duplicated"], row["running"]) == (12, 0, 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small tmpfs needs root (CI runs as root)")
def test_a_full_artifact_filesystem_fails_the_trial_and_the_study_resumes():
    row = _drills().run_drill("disk_full")
    assert row["exit_codes"] == [2, 0] and row["half_written_files"] == 0
    assert (row["complete"], row["lost"], row["duplicated"], row["running"]) == (4, 0, 0, 0)
    assert "no space left" in row["what happened"]
