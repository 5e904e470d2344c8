"""Does the sampler learn to avoid configs that break a budget? Share of suggestions rejected before training.

A size budget (deterministic: the file size of a config does not depend on timing noise) set to a share of
the FP32 base's file size; digits-cnn (scikit-learn digits, trains in seconds). For each sampler and seed, a
study of `--trials` trials; every config over budget is rejected on its untrained candidate (no training
step) and recorded as infeasible. The table gives the share of rejected suggestions per block of trials:
a sampler that learns the region shows it falling; RandomSampler is the reference that cannot.

    .venv/bin/python experiments/budget_learning.py            # ~5 min on 2 cores
    .venv/bin/python experiments/budget_learning.py --trials 45 --seeds 5

Writes experiments/results/budget_learning.{json,csv} and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd

from lepton_search import SearchSpace, search, workloads
from lepton_search.records import REJECTED
from lepton_search.space import FinetuneSettings

RESULTS = Path(__file__).resolve().parent / "results"


def grid_share(wl: workloads.Workload, max_size_mb: float) -> float:
    """The share of the grid's (prune ratio, bits) configs whose untrained file is over the size budget
    (epochs do not change the size): what a sampler that learns nothing rejects on average."""
    from lepton_search.candidate import compress
    from lepton_search.space import CompressionConfig

    over = []
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in [i * 0.125 for i in range(8)]:
            for bits in (32, 16, 8):
                cand = compress(wl, CompressionConfig(ratio, bits, 0), Path(tmp) / "c.onnx",
                                settings=FinetuneSettings(calibration_size=32))
                over.append(cand.size_mb > max_size_mb)
    return sum(over) / len(over)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size-ratio", type=float, default=0.3, help="budget: max_size_mb = ratio x base file size")
    ap.add_argument("--samplers", default="tpe,gp,random")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(logging.WARNING)
    wl = workloads.get("digits-cnn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base_size = None
        for sampler in args.samplers.split(","):
            for seed in range(args.seeds):
                space = SearchSpace(prune_ratio=(0.0, 0.875, 0.125), bits=(32, 16, 8), finetune_epochs=(0, 2),
                                    sampler=sampler, seed=seed, trials=args.trials, max_size_mb=1e9,
                                    finetune=FinetuneSettings(subset_size="all", batch_size=64),
                                    early_reject="off", anchors="off")  # count budget rejections only, of
                                                                        # the sampler's own suggestions
                if base_size is None:  # one throwaway trial tells the base's file size
                    probe = search(wl, SearchSpace(bits=(32,), finetune_epochs=(0, 0), prune_ratio=(0.0, 0.0, 0.1)),
                                   n_trials=1, storage=f"sqlite:///{tmp}/probe.db", study_name="p", verbose=False,
                                   callbacks=[], remeasure=False)
                    base_size = probe.base.size_mb
                space = dataclasses.replace(space, max_size_mb=args.size_ratio * base_size)
                result = search(wl, space, n_trials=args.trials, storage=f"sqlite:///{tmp}/{sampler}{seed}.db",
                                study_name="b", verbose=False, callbacks=[], remeasure=False)
                done = [t for t in result.study.get_trials() if t.state.name == "COMPLETE"]
                for i, t in enumerate(done[: args.trials]):
                    rows.append({"sampler": sampler, "seed": seed, "trial": i, "block": i // args.block,
                                 "rejected": REJECTED in t.user_attrs,
                                 "finetune_seconds": t.user_attrs.get("finetune_seconds") or 0.0})
    df = pd.DataFrame(rows)
    table = df.groupby(["sampler", "block"]).rejected.mean().unstack("block")
    table.columns = [f"trials {b * args.block + 1}-{(b + 1) * args.block}" for b in table.columns]
    RESULTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(RESULTS / "budget_learning.csv", index=False)
    summary = {"workload": "digits-cnn", "base_size_mb": base_size, "max_size_mb": args.size_ratio * base_size,
               "size_ratio": args.size_ratio, "trials": args.trials, "seeds": args.seeds,
               "grid_share_over_budget": grid_share(wl, args.size_ratio * base_size),
               "share_rejected_by_block": {s: table.loc[s].round(3).to_dict() for s in table.index}}
    grid = SearchSpace(prune_ratio=(0.0, 0.875, 0.125), bits=(32, 16, 8), finetune_epochs=(0, 2))
    (RESULTS / "budget_learning.json").write_text(json.dumps(summary, indent=2))
    print(f"budget: max_size_mb = {args.size_ratio} x base ({base_size:.4f} MB); grid of {grid.n_configs} configs")
    print("share of suggestions rejected before training, mean over seeds:")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
