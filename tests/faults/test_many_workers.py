"""16 workers on one throwaway PostgreSQL, killed and joined at random, heartbeats on (the script's drill, shared:
`lepton_search.testing.drills.many_workers`). The workload is built from a seed in milliseconds, so the time goes to
starting the processes (about 4 CPU-seconds each: Python, torch, ONNX), which is what the drill is about."""

from __future__ import annotations

import signal

import pytest

from lepton_search.testing.drills import many_workers
from lepton_search.testing.postgres import pg_bin_dir

pytestmark = pytest.mark.slow


def test_sixteen_workers_killed_and_joined_at_random_reach_the_count_with_no_duplicate(tmp_path):
    if pg_bin_dir() is None:
        pytest.skip("PostgreSQL server not installed: apt-get install -y postgresql")
    import psycopg2  # noqa: F401 - in the lock: missing fails, not skips

    row = many_workers(tmp_path, n=16, kills=4, every_s=2.0, trials=24, limit_s=240.0)
    assert not row["timed_out"], row
    assert row["workers"] == 20 and row["killed"] == 4 and row["joined"] == 4
    assert set(row["exit_codes"]) <= {0, -signal.SIGKILL}, row["failed_logs"]  # every worker not killed exits 0
    assert row["complete"] >= 24, row
    assert (row["lost"], row["duplicated"], row["running"], row["waiting"]) == (0, 0, 0, 0), row
