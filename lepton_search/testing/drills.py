"""Fault drills' helpers (tests and `experiments/fault_drills.py`): a PostgreSQL cluster that can be restarted,
CLI processes, a small filesystem to fill, and the tally every drill reports (lost, duplicated, RUNNING).

A trial is *lost* when its config FAILed for a fault (not for the candidate's own reason) and no trial of that
config completed; *duplicated* when a config completed more than once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna

from lepton_search.testing.postgres import free_port, pg_bin_dir

# The drills' space: digits-mlp, 12 configs, trials of about a second.
DRILL_SPACE = """\
knobs:
  prune_ratio: {low: 0.0, high: 0.5, step: 0.25}
  bits: [32, 8]
  finetune_epochs: {low: 0, high: 1}
early_reject: off
anchors: off
sampler: random
trials: 12
finetune: {subset_size: 256, batch_size: 32, bn_batches: 2, calibration_size: 16}
"""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from lepton_search.cli import main; sys.exit(main())", *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


@dataclass
class Tally:
    goal: int
    lost: int  # trials the study should have and has not: goal - complete (never below 0)
    complete: int
    distinct_complete: int
    duplicated: int
    failed_configs_not_completed: int  # failed (a fault or the candidate) and not re-run: count was reached first
    running: int
    waiting: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def tally(url: str, study_name: str, goal: int) -> Tally:
    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)

    def key(t: optuna.trial.FrozenTrial) -> tuple:
        return tuple(sorted(t.params.items()))

    done = Counter(key(t) for t in trials if t.state.name == "COMPLETE")
    failed = [t for t in trials if t.state.name == "FAIL"]
    return Tally(goal=goal, lost=max(0, goal - sum(done.values())), complete=sum(done.values()), distinct_complete=len(done),
                 duplicated=sum(n - 1 for n in done.values()),
                 failed_configs_not_completed=len({key(t) for t in failed if t.params and key(t) not in done}),
                 running=sum(t.state.name == "RUNNING" for t in trials),
                 waiting=sum(t.state.name == "WAITING" for t in trials), failed=len(failed))


def wait_for_running(url: str, study_name: str, timeout_s: float = 300.0, *, n: int = 1,
                     proc: subprocess.Popen | None = None) -> list[int]:
    """Numbers of >= `n` RUNNING trials with params (a trial is under way), polled until `timeout_s`; raises at
    once when `proc` (the process meant to run them) has exited."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout is not None else ""
            raise RuntimeError(f"the process exited ({proc.returncode}) before a trial ran: {out[-1500:]}")
        try:
            study = optuna.load_study(study_name=study_name, storage=url)
            running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                       if t.params]
            if len(running) >= n:
                return running
        except Exception:  # noqa: BLE001, S110 - the study is not there yet, or the database restarts
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no RUNNING trial in {study_name!r} after {timeout_s:.0f}s")


class Cluster:
    """A throwaway PostgreSQL cluster (as `postgres` when root) that can be stopped and started again."""

    def __init__(self, root: Path, max_connections: int) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL server not found: apt-get install -y postgresql")
        self.bin, self.root, self.data, self.port = bin_dir, root, root / "data", free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.opts = (f"-k {root} -h 127.0.0.1 -p {self.port} -c fsync=off -c max_connections={max_connections}")
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/lepton"
        self.restarts = 0

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self.as_pg, *args], check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self.opts, "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_s: float = 2.0) -> None:
        """Stop (every connection dropped), stay down `down_s`, start again."""
        self.stop("fast")
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def connections(self) -> int:
        """Client connections to the `lepton` database now (pg_stat_activity)."""
        out = subprocess.run([*self.as_pg, str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                              "postgres", "-tAc", "select count(*) from pg_stat_activity where datname='lepton'"],
                             capture_output=True, text=True, timeout=30, check=False)
        return int(out.stdout.strip() or 0) - 1  # less psql's own


@contextmanager
def restartable_cluster(max_connections: int = 200) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="lepton_pg_drill_"))
    cluster = Cluster(root, max_connections)
    if cluster.as_pg:
        shutil.chown(root, user="postgres", group="postgres")
    started = False
    try:
        cluster._run(str(cluster.bin / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres",
                     "--no-sync", "-E", "UTF8")
        cluster.start()
        started = True
        cluster._run(str(cluster.bin / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                     "lepton")
        yield cluster
    finally:
        if started:
            subprocess.run([*cluster.as_pg, str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate",
                            "stop"], check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def small_filesystem(size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh folder (root only), unmounted and removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="lepton_small_fs_"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                   capture_output=True, timeout=30)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file into `folder` until its filesystem has at most `leave_bytes` free; returns it."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free - leave_bytes
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(free, 0))
        except OSError:
            pass
    return filler
