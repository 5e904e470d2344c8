"""Fault drills' helpers (tests and `experiments/fault_drills.py`): a PostgreSQL cluster that can be restarted,
CLI processes, a small filesystem to fill, and the tally every drill reports (lost, duplicated, RUNNING).

A trial is *lost* when its config FAILed for a fault (not for the candidate's own reason) and no trial of that
config completed; *duplicated* when a config completed more than once.
"""

from __future__ import annotations

import os
import random
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
from typing import Any

import optuna

from lepton_search.testing.postgres import free_port, pg_bin_dir

# The drills' space: digits-mlp, 12 configs of which one (unpruned FP32 untrained) is the base, not a trial: 11
# models to search, trials of about a second.
DRILL_TRIALS = 11
DRILL_SPACE = """\
knobs:
  prune_ratio: {low: 0.0, high: 0.5, step: 0.25}
  bits: [32, 8]
  finetune_epochs: {low: 0, high: 1}
early_reject: off
anchors: off
sampler: random
trials: 11
finetune: {subset_size: 256, batch_size: 32, bn_batches: 2, calibration_size: 16}
"""


# The many-workers drill's: 44 configs, 40 trials, so that 16+ workers each get a few.
MANY_SPACE = DRILL_SPACE.replace("{low: 0.0, high: 0.5, step: 0.25}", "{low: 0.0, high: 0.5, step: 0.05}").replace(
    "trials: 11", "trials: 40")
BLOBS_WORKLOAD = "lepton_search.testing.drills:blobs_mlp"
DELAY_ENV = "LEPTON_SEARCH_TRIAL_DELAY_S"  # study.TRIAL_DELAY_ENV (this module stays below the study layer)
HEARTBEATS = ("--heartbeat-interval", "2", "--grace-period", "6")


def blobs_mlp() -> Any:
    """The many-workers drill's workload: an MLP on four Gaussian blobs, built from a seed (no data set to read, no
    scikit-learn to import) in milliseconds. Every worker builds it again before loading the base weights, so a
    drill of 16+ processes spends its time starting them (Python, torch, ONNX), not reading digits."""
    import torch
    from torch import nn

    from lepton_search.workloads import Workload

    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=gen) * 2.0
    y = torch.randint(0, 4, (768,), generator=gen)
    x = centers[y] + torch.randn(768, 16, generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    for _ in range(60):  # full-batch gradient steps by hand: torch.optim's first use costs a second per process
        model.zero_grad()
        nn.functional.cross_entropy(model(x[:512]), y[:512]).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.2 * p.grad
    return Workload("blobs-mlp", model.eval(), train=(x[:512], y[:512]), val=(x[512:640], y[512:640]),
                    test=(x[640:], y[640:]), example_input=x[512:513].clone(), batch_size=128)


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


def init_cli(url: str, tmp: Path, space: str, *, study: str = "d", workload: str = "digits-mlp") -> Path:
    """`lepton-search init` of `space` (YAML text) as study `study`; returns its artifact folder."""
    (tmp / "space.yaml").write_text(space)
    art = tmp / "art"
    out = subprocess.run(cli("init", str(tmp / "space.yaml"), "--storage", url, "--study", study, "--workload",
                             workload, "--artifacts", str(art)), env=env(), capture_output=True, text=True,
                         timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"init exited {out.returncode}: {out.stderr[-2000:]}")
    return art


def worker_process(url: str, *extra: str, study: str = "d", delay_s: float = 0.0,
                   log: Path | None = None) -> subprocess.Popen:
    """A `lepton-search worker` process, heartbeats every 2 s (stale after 6 s), each trial held `delay_s`."""
    sink = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    return subprocess.Popen(cli("worker", "--storage", url, "--study", study, *HEARTBEATS, *extra),
                            env=env(**{DELAY_ENV: str(delay_s)}), stdout=sink, stderr=subprocess.STDOUT)


def many_workers(tmp: Path, *, n: int = 16, kills: int = 6, every_s: float = 3.0, trials: int = 40,
                 workload: str = BLOBS_WORKLOAD, seed: int = 0, limit_s: float = 900.0) -> dict[str, Any]:
    """`n` workers on one throwaway PostgreSQL study of `trials` trials (of 44 configs), heartbeats on (2 s / 6 s); every `every_s`
    seconds one live worker, picked at random, is SIGKILLed and a new one joins (`kills` times). Returns the tally
    with the trial rate after the first trial and the database connections per live worker (sampled)."""
    import signal

    rng = random.Random(seed)
    with restartable_cluster(max_connections=300) as pg:
        init_cli(pg.url, tmp, MANY_SPACE.replace("trials: 40", f"trials: {trials}"), workload=workload)
        start = time.monotonic()
        logs: list[Path] = []

        def join() -> subprocess.Popen:
            logs.append(tmp / f"worker{len(logs)}.log")
            return worker_process(pg.url, delay_s=0.5, log=logs[-1])

        procs = [join() for _ in range(n)]
        wait_for_running(pg.url, "d", 300)
        first_trial = time.monotonic()
        samples, killed, joined, timed_out = [], 0, 0, False
        while any(p.poll() is None for p in procs):
            time.sleep(every_s)
            live = [p for p in procs if p.poll() is None]
            if live:
                samples.append(pg.connections() / len(live))
            if killed < kills and len(live) > 1:
                rng.choice(live).send_signal(signal.SIGKILL)
                killed += 1
                procs.append(join())
                joined += 1
            if time.monotonic() - start > limit_s:
                timed_out = True
                for p in procs:
                    p.kill()
                break
        end = time.monotonic()
        codes = [p.wait() for p in procs]
        t = tally(pg.url, "d", trials)
    failed_logs = [log.read_text()[-1500:] for log, code in zip(logs, codes, strict=True) if code not in (0, -9)]
    rate = t.complete / max(end - first_trial, 1e-9)
    per_worker = sum(samples) / len(samples) if samples else 0.0
    return {"fault": f"{n} workers, {killed} SIGKILLed, {joined} joined", **t.as_dict(), "workers": len(procs),
            "killed": killed, "joined": joined, "timed_out": timed_out,
            "exit_codes": sorted(set(codes)), "failed_logs": failed_logs, "trials_per_s": round(rate, 2),
            "db_connections_per_worker": round(per_worker, 2),
            "what happened": f"{t.complete}/{trials} complete at {rate:.2f} trials/s after the first trial "
                             f"({end - start:.0f} s in all, start-up of {len(procs)} processes on this machine "
                             f"included); {per_worker:.2f} database connections per live worker"}


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
