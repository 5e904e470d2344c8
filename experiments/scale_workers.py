"""Trials per hour with 1 and 2 `lepton-search worker` processes on this machine.

Each run gets its own fresh study on a throwaway PostgreSQL cluster (SQLite when no server is installed),
made once by `lepton-search init`, with the same configs queued in the same order, so 1 and 2 workers do
identical work. Settings alternate (1, 2, 2, 1, ...) and the table shows medians over repeats, because
other processes on a shared machine move the figures.
Throughput counts COMPLETE trials over the wall time of the worker processes, start-up included, and
also over the span of the trials themselves (first start to last completion), which leaves out the
~5 s of imports each worker pays once.

Run:  .venv/bin/python experiments/scale_workers.py [--trials 12] [--repeats 2] [--workload digits-cnn]
Writes experiments/results/scale_workers.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import optuna

from lepton_search.cli import main as cli_main
from lepton_search.testing.postgres import pg_bin_dir, throwaway_cluster

LEPTON = Path(sys.executable).with_name("lepton-search")
OUT = Path(__file__).parent / "results" / "scale_workers.json"
SPACE = """\
knobs:
  prune_ratio: {low: 0.0, high: 0.6, step: 0.1}
  bits: [32, 16, 8]
  finetune_epochs: {low: 0, high: 1}
anchors: off  # every run does the same queued configs, nothing else
trials: 40
"""


def queued_configs(total: int, seed: int = 0) -> list[dict]:
    """`total` distinct configs of SPACE in a fixed shuffled order (the work every run does)."""
    import random

    grid = [{"prune_ratio": round(0.1 * r, 1), "bits": b, "finetune_epochs": e}
            for r in range(7) for b in (32, 16, 8) for e in (0, 1)]
    random.Random(seed).shuffle(grid)
    return grid[:total]


def run_setting(url: str, workers: int, total: int, workload: str, tmp: Path, tag: str) -> dict:
    study = f"scale_{tag}_w{workers}"
    art = tmp / f"artifacts_{tag}_{workers}"
    assert cli_main(["init", str(tmp / "space.yaml"), "--storage", url, "--study", study, "--workload", workload,
                     "--artifacts", str(art)]) == 0
    queue = optuna.load_study(study_name=study, storage=url)
    for params in queued_configs(total):
        queue.enqueue_trial(params)
    load_before = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    per_worker = total // workers
    start = time.perf_counter()
    procs = [subprocess.Popen([str(LEPTON), "worker", "--storage", url, "--study", study, "--trials", str(per_worker),
                               "--seed", str(100 + i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(workers)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed:\n" + "\n".join(o[-2000:] for o in outputs))
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {
        "workers": workers, "run": tag, "load_avg_1min_before": round(load_before, 2), "complete_trials": len(done),
        "pruned_duplicates": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in trials),
        "wall_s": round(wall, 2), "trial_span_s": round(span, 2),
        "trials_per_hour_wall": round(len(done) / wall * 3600, 1),
        "trials_per_hour_span": round(len(done) / span * 3600, 1),
        "mean_trial_s": round(statistics.mean((t.datetime_complete - t.datetime_start).total_seconds() for t in done), 2),
        "median_latency_cv": round(statistics.median(t.user_attrs["latency_cv"] for t in done), 4),
    }


def median_row(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "workers"]
    return {"workers": runs[0]["workers"], **{k: round(statistics.median(r[k] for r in runs), 4) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="COMPLETE trials per setting (split over its workers)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting, alternating 1,2,2,1,...")
    parser.add_argument("--workload", default="digits-cnn")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lepton_scale_")))
        (tmp / "space.yaml").write_text(SPACE)
        if pg_bin_dir() is not None:
            url, storage = stack.enter_context(throwaway_cluster()), "postgresql (throwaway cluster, 127.0.0.1)"
        else:
            url, storage = f"sqlite:///{tmp / 'scale.db'}", "sqlite (no PostgreSQL server installed)"
        order = [n for i in range(args.repeats) for n in ((1, 2) if i % 2 == 0 else (2, 1))]
        runs = [run_setting(url, n, args.trials, args.workload, tmp, f"r{i}") for i, n in enumerate(order)]
    rows = [median_row([r for r in runs if r["workers"] == n]) for n in (1, 2)]
    ratio_wall = rows[1]["trials_per_hour_wall"] / rows[0]["trials_per_hour_wall"]
    ratio_span = rows[1]["trials_per_hour_span"] / rows[0]["trials_per_hour_span"]
    result = {
        "workload": args.workload, "trials_per_setting": args.trials, "storage": storage,
        "cpu_count": os.cpu_count(), "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "machine": platform.machine(), "python": platform.python_version(), "optuna": optuna.__version__,
        "settings_median": rows, "runs": runs, "speedup_2_vs_1_wall": round(ratio_wall, 3), "speedup_2_vs_1_span": round(ratio_span, 3),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.workload}, {args.trials} queued configs per run, median of {args.repeats} runs each, {storage}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'wall s':>7} {'trials/h (wall)':>16} {'trials/h (span)':>16} {'mean trial s':>13} "
          f"{'pruned dup':>10} {'median lat cv':>13}")
    for r in rows:
        print(f"{r['workers']:>7} {r['wall_s']:>7.1f} {r['trials_per_hour_wall']:>16.0f} {r['trials_per_hour_span']:>16.0f} "
              f"{r['mean_trial_s']:>13.2f} {r['pruned_duplicates']:>10} {r['median_latency_cv']:>13.4f}")
    print(f"2 vs 1 worker: x{ratio_wall:.2f} (wall, start-up included), x{ratio_span:.2f} (trial span); wrote {OUT}")


if __name__ == "__main__":
    main()
