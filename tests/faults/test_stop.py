"""Stopped politely: SIGTERM to `run` and to a worker mid-trial; exit within the bound, resume loses nothing."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from lepton_search.study import TRIAL_DELAY_ENV
from lepton_search.testing.drills import DRILL_SPACE, cli, env, tally, wait_for_running

pytestmark = pytest.mark.slow


def _run(url, art, space, n, *extra):
    return cli("run", str(space), "--workload", "digits-mlp", "--storage", url, "--study", "s", "--trials", str(n),
               "--artifacts", str(art), *extra)


def _term(proc, url, delay_s):
    running = wait_for_running(url, "s", 300)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return running, time.monotonic() - sent, out


@pytest.mark.parametrize(("delay_s", "grace_s"), [(3, 30), (60, 2)], ids=["finishes", "grace-runs-out"])
def test_sigterm_to_run_mid_trial(tmp_path, delay_s, grace_s):
    url, art, space = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "art", tmp_path / "space.yaml"
    space.write_text(DRILL_SPACE)
    proc = subprocess.Popen(_run(url, art, space, 3, "--grace-s", str(grace_s)), env=env(**{TRIAL_DELAY_ENV: str(delay_s)}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, took_s, out = _term(proc, url, delay_s)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert took_s < grace_s + 15, out[-2000:]  # within the bound (plus the flush)
    assert "stopped: stopped by SIGTERM" in out and "nothing lost" in out
    after = tally(url, "s", 3)
    assert after.running == 0
    if delay_s < grace_s:
        assert after.complete >= 1  # the trial in flight finished
    else:
        assert after.waiting == 1 and after.failed == 1  # failed within the bound, queued again
    done = subprocess.run(_run(url, art, space, 3), env=env(), check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final = tally(url, "s", 3)
    assert (final.complete, final.lost, final.duplicated, final.running, final.waiting) == (3, 0, 0, 0, 0)


def test_sigterm_to_worker_mid_trial(tmp_path):
    url, art, space = f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "art", tmp_path / "space.yaml"
    space.write_text(DRILL_SPACE.replace("trials: 11", "trials: 3"))
    init = subprocess.run(cli("init", str(space), "--storage", url, "--study", "s", "--workload", "digits-mlp",
                              "--artifacts", str(art)), env=env(), check=False, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-2000:]
    worker = cli("worker", "--storage", url, "--study", "s", "--grace-s", "2")
    proc = subprocess.Popen(worker, env=env(**{TRIAL_DELAY_ENV: "60"}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _, took_s, out = _term(proc, url, 60)
    assert proc.returncode == 128 + signal.SIGTERM and took_s < 20, out[-2000:]
    assert tally(url, "s", 3).running == 0
    done = subprocess.run(worker, env=env(), check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    final = tally(url, "s", 3)
    assert (final.complete, final.lost, final.duplicated, final.running, final.waiting) == (3, 0, 0, 0, 0)
