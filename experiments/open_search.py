"""Does the open search find the front by itself? Samplers replayed on recorded grids, many seeds each (issue 30).

A grid is every config of a space evaluated once by the real engine, with each trial's measured values and
seconds (`search_efficiency.py` records the CNN's: 130 configs). Here each sampler runs on the table as the
engine runs it today: anchors first (quantization alone), the early-rejection rule, one latency per graph (a
chain's epochs share their graph: its trials' timings are pooled into one median, as `graphs.py` now stores one
latency per graph), a repeat of a model (ratio 0 whatever the method; the unpruned FP32 model untrained is the
base) costs nothing. A run stops when what it evaluated reaches 95% of the grid's hypervolume; its seconds are
the table's (with checkpoint reuse inside the run) plus the sampler's own.

The comparison the issue asks for is with random sampling *with the same anchors and rules*: what the sampler
itself adds.

    .venv/bin/python experiments/open_search.py                 # 50 seeds per sampler, ~10 min on 2 cores
    .venv/bin/python experiments/open_search.py --seeds 10      # a quick look

Writes experiments/results/open_search.json (the `replay` part; the live runs of the issue are not in it until
they are run) and prints a table. Only the CNN grid is recorded: bbc-minilm's and movielens-ncf's are not.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_efficiency as se  # the experiments folder is not a package

from lepton_search.latency.cpu_identity import this_cpu

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("front", "tpe", "random")
SEEDS = 50


def cnn_grid() -> tuple[pd.DataFrame, dict]:
    """The recorded CNN grid, one latency per graph, and what its run recorded (base, host, tolerance)."""
    df = pd.read_csv(RESULTS / "search_efficiency_grid.csv")
    meta = json.loads((RESULTS / "search_efficiency.json").read_text())
    graph = list(zip(df.prune_ratio.where(df.prune_ratio > 0, 0.0), df.prune_method.where(df.prune_ratio > 0, "-"),
                     df.bits))
    df = df.assign(latency_ms_timed=df.latency_ms,
                   latency_ms=df.groupby(pd.Series(graph, index=df.index).astype(str)).latency_ms.transform("median"))
    return df, meta


def _job(df: pd.DataFrame, meta: dict, job: tuple[str, int]) -> dict:
    name, seed = job
    return se.replay(df, se.Grid(), meta["base"]["accuracy"], meta["base"]["latency_ms"], name, seed,
                     True, meta["early_reject_tolerance"], True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(logging.WARNING)
    df, meta = cnn_grid()
    chains = df.assign(chain=[se.chain(se.canonical(se.CompressionConfig.from_dict(r))) for r in df.to_dict("records")])
    grid_s = float(df.overhead_s.sum() + chains.groupby("chain").ft_total_s.max().sum())
    jobs = [(s, seed) for s in SAMPLERS for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=se._replay_process) as pool:
        runs = pd.DataFrame(list(pool.map(functools.partial(_job, df, meta), jobs, chunksize=5)))
    runs["s"] = runs.wall_s_to_95pct.fillna(np.inf)
    median = runs.groupby("sampler").s.median()
    random_s = float(median["random"])
    rows = []
    for name in SAMPLERS:
        s = runs[runs.sampler == name].s
        rows.append({"grid": "fashion-mnist-cnn (130 configs)", "seeds": args.seeds, "sampler": name,
                     "median_s_to_95pct": float(s.median()), "q25_s": float(s.quantile(0.25)),
                     "q75_s": float(s.quantile(0.75)), "random_with_rules_median_s": random_s,
                     "vs_random_with_rules": float(s.median()) / random_s,
                     "vs_random_with_rules_bootstrap_5_50_95": se.bootstrap_ratio(s, runs[runs.sampler == "random"].s),
                     "grid_s": grid_s, "share_of_grid_s": float(s.median()) / grid_s,
                     "median_evaluated": float(runs[runs.sampler == name].evaluated.median())})
    out = {"grid_host": meta["host"], "replay_host": str(this_cpu()),
           "rules": "anchors untrained + early_reject dominated + one latency per graph + model duplicates",
           "replay": rows,
           "not_recorded": ["bbc-minilm grid", "movielens-ncf grid", "a held-back fourth grid"],
           "live": "not run (issue 30's live targets: bbc-minilm 30 min, a user's HF classifier, the CNN 45 min)"}
    (RESULTS / "open_search.json").write_text(json.dumps(out, indent=2))
    table = pd.DataFrame(rows)[["sampler", "seeds", "median_s_to_95pct", "q25_s", "q75_s", "vs_random_with_rules",
                                "share_of_grid_s", "median_evaluated"]]
    print(f"grid recorded on: {meta['host']}; grid seconds {grid_s:.0f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for r in rows:
        lo, mid, hi = r["vs_random_with_rules_bootstrap_5_50_95"]
        print(f"{r['sampler']}: {mid:.2f}x random with the same rules (bootstrap 5-95%: {lo:.2f}-{hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
