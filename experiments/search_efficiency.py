"""How fast each sampler finds the front: an exhaustive grid evaluated once, then samplers replayed on it.

1. The grid: prune_ratio 0-0.75 step 0.125 x prune_method {structured, global} x bits {32, 8} x
   finetune_epochs 0-4 on the default workload (Fashion-MNIST CNN, its shipped 3-epoch base: BASE_EPOCHS; the
   default space's fine-tuning: 5,000 images per epoch at batch 16, lr 0.005; round_to 8), evaluated once by
   the real engine (`lepton_search.search`, every config enqueued, chains in increasing epochs so each trial
   trains one new epoch and reuses the rest). Ratio 0 is one model whatever the method: evaluated once. Each
   config's wall seconds come from its Optuna trial (start to complete: prune, fine-tune, export, quantize,
   ORT accuracy on val and test, latency, upload). Without reuse a config would also retrain the epochs it
   loaded: wall_s + (ft_total_s - ft_s).
2. The replay: TPE, NSGA-II, GP and random (the engine's own `make_sampler`, same constraints as the default
   space) run on the table, 100 seeds each (`--seeds`; the issue asks for 5: the first 5 seeds' medians are reported too;
   they swung 2x with the seeds picked), charged their own seconds as well (GP fits a model). A config costs
   its table seconds, minus the epochs the same run already trained for that chain (in-run reuse, as the
   engine does); a repeated config costs nothing and queues an unseen one (as the engine does). Each run stops
   when the hypervolume of what it evaluated reaches 95% of the grid's (reference point: base accuracy - 3 pt,
   base latency). A variant per sampler applies the engine's early-rejection rule
   (`rejection.dominated_before_training`, tolerance one standard error of the base's validation accuracy, as the
   study passes it): a rejected config is charged its untrained probe (compress seconds without fine-tuning,
   at most its wall seconds). A third variant also starts as a fresh engine study does (`anchors: untrained`,
   `study.queue_anchors`): quantization alone, 0 / 8 / 0, is evaluated first (table seconds charged) and the
   sampler proposes the rest. The default sampler is the one with the fewest median seconds over all seeds with
   the rule and the anchors on (the default space's settings); the bar compares it with RandomSampler alone
   (no rule, no anchors), and the table shows random with both as well.

    .venv/bin/python experiments/search_efficiency.py              # grid (~60 min, resumable) + replay
    .venv/bin/python experiments/search_efficiency.py --replay-only            # 100 seeds, ~7 min on 2 cores
    .venv/bin/python experiments/search_efficiency.py --replay-only --seeds 5  # the issue's 5 seeds

Writes experiments/results/search_efficiency.json and search_efficiency_grid.csv and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import random
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from lepton_search import default_space, records, workloads
from lepton_search.front_sampler import TRIAL_SECONDS
from lepton_search.graphs import distinct_models, is_base
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.records import TrialRecord
from lepton_search.rejection import dominated_before_training
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.study import make_sampler, queue_anchors
from lepton_search.tasks import accuracy_standard_error

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # the experiments folder is not a package

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLERS = ("tpe", "nsga2", "gp", "random", "front")
# The issue asks for 5 seeds; the first 5 are reported too. Their median swung 2x with the seeds picked, and on 20
# seeds the bar's ratio still had a 10-90% bootstrap interval of 0.49-0.77 (TPE with the rule over random):
# 100 seeds, run on every core (each run times its own sampler, one process per core).
SEEDS = 100
ISSUE_SEEDS = 5
# (early rejection, anchors): the sampler alone; with the rule; as the engine's default study runs it
VARIANTS = ((False, False), (True, False), (True, True))
HV_SHARE = 0.95
REF_DROP_PTS = 3.0
# The grid runs on the default workload as the demo has it: the shipped 3-epoch base and the default space's
# fine-tune settings (batch 16, lr 0.005). The run before took a 2-epoch base and batch 128, lr 0.01 (1,919 s with
# reuse; GP with early rejection reached 95% in 33% of it over 20 seeds); both moved with the demo's defaults.
BASE_EPOCHS = 3


@dataclasses.dataclass(frozen=True)
class Grid:
    """The grid's extent; the defaults are issue 10's (prune 0-0.75 step 0.125, epochs 0-4, 5,000 images)."""

    prune_step: float = 0.125
    max_epochs: int = 4
    subset: int = 5000

    @property
    def suffix(self) -> str:
        """'' for the issue's grid, else the extent, so a smaller grid never overwrites its results."""
        return "" if self == Grid() else f"-p{self.prune_step}-e{self.max_epochs}-n{self.subset}"

    @property
    def study_name(self) -> str:
        return f"search-efficiency-p{self.prune_step}-e{self.max_epochs}-n{self.subset}"


def grid_space(grid: Grid) -> SearchSpace:
    base = default_space()
    return dataclasses.replace(
        base, prune_ratio=(0.0, 0.75, grid.prune_step), prune_method=("structured", "global"), round_to=8,
        bits=(32, 8), finetune_epochs=(0, grid.max_epochs), max_accuracy_drop_pts=None, early_reject="off",
        sampler="random", finetune=dataclasses.replace(base.finetune, subset_size=grid.subset),
    )


def chain(cfg: CompressionConfig) -> tuple:
    """Configs that share fine-tuning checkpoints: all knobs but the epochs."""
    return tuple(v for k, v in cfg.as_dict().items() if k != "finetune_epochs")


def canonical(cfg: CompressionConfig) -> CompressionConfig:
    """Ratio 0 is the unpruned model whatever the method: one table row (the grid's order meets `global` first)."""
    return dataclasses.replace(cfg, prune_method="global") if cfg.prune_ratio == 0 else cfg


def grid_configs(space: SearchSpace) -> list[CompressionConfig]:
    seen, out = set(), []
    for cfg in sorted(space.configs(), key=lambda c: (chain(c), c.finetune_epochs)):
        if canonical(cfg) not in seen:
            seen.add(canonical(cfg))
            out.append(cfg)
    return out


def run_grid(storage: str, grid: Grid, artifacts: Path) -> None:
    space = grid_space(grid)
    harness.run_planned(workloads.get("fashion-mnist-cnn", base_epochs=BASE_EPOCHS), space, grid_configs(space), storage=storage,
                        study_name=grid.study_name, artifacts=artifacts)


def grid_table(storage: str, study_name: str) -> pd.DataFrame:
    """One row per COMPLETE grid trial: its config, what it measured, and its seconds."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rec = TrialRecord.from_attrs(t.user_attrs)
        wall = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append({**rec.config, "trial": t.number, "accuracy": rec.accuracy,
                     "test_accuracy": rec.test_accuracy, "latency_ms": rec.latency_ms,
                     "finetune_epochs_reused": rec.finetune_epochs_reused, "ft_s": rec.finetune_seconds,
                     "ft_total_s": rec.finetune_seconds_total, "compress_s": rec.compress_seconds,
                     "wall_s": wall, "overhead_s": wall - rec.finetune_seconds,
                     "wall_s_without_reuse": wall - rec.finetune_seconds + rec.finetune_seconds_total})
    return pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)


def hypervolume(points: list[tuple[float, float]], ref_acc: float, ref_lat: float) -> float:
    """Area dominated by (accuracy up, latency down) points inside the reference box. Two objectives: a sweep
    over latency is exact and short, so no dependency on optuna's private hypervolume module."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref_acc and lat < ref_lat)
    area, best_acc = 0.0, ref_acc
    for i, (lat, acc) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][0] if i + 1 < len(pts) else ref_lat
        area += (next_lat - lat) * (best_acc - ref_acc)
    return area


class Replay:
    """One sampler run on the table, charged the table's seconds with in-run reuse."""

    def __init__(self, table: dict, space: SearchSpace, base_acc: float, ref: tuple[float, float], target_hv: float,
                 seed: int, early_reject: bool, tolerance: float) -> None:
        self.table, self.space, self.base_acc, self.ref, self.target_hv = table, space, base_acc, ref, target_hv
        self.seed, self.early_reject, self.tolerance = seed, early_reject, tolerance
        self.trained: dict[tuple, int] = {}  # chain -> epochs this run has trained
        self.seen: set[CompressionConfig] = set()
        self.points: list[tuple[float, float]] = []  # (accuracy, latency_ms) evaluated
        self.found: list[tuple[float, float]] = []  # (latency_ms, accuracy) feasible, for the rejection rule
        self.wall_s, self.reached_at, self.evaluated, self.rejected, self.sampler_s = 0.0, None, 0, 0, 0.0

    def cost(self, cfg: CompressionConfig) -> float:
        """The config's seconds outside training, plus the epochs of its chain this run has not trained yet."""
        row = self.table[canonical(cfg)]
        done = self.trained.get(chain(cfg), 0)
        return row["overhead_s"] + max(0.0, row["ft_total_s"] - self._ft_total(cfg, done))

    def _ft_total(self, cfg: CompressionConfig, epochs: int) -> float:
        """Seconds to train `cfg`'s chain to `epochs` (recorded with the checkpoints: an epoch trained in an
        earlier run of the grid still counts)."""
        return 0.0 if epochs == 0 else self.table[canonical(dataclasses.replace(cfg, finetune_epochs=epochs))]["ft_total_s"]

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        cfg = self.space.suggest(trial)
        # the engine prunes a repeat (seconds: ~0) and queues an unseen config; a repeat is the same model
        # (ratio 0 whatever the method) or the base itself (unpruned FP32, untrained: measured as the base)
        if canonical(cfg) in self.seen or is_base(cfg):
            free = [c for c in self.space.configs() if canonical(c) not in self.seen and not is_base(c)]
            if free:
                trial.study.enqueue_trial(self.space.params(random.Random(f"{self.seed}:{trial.number}").choice(free)))
            raise optuna.TrialPruned()
        self.seen.add(canonical(cfg))
        row = self.table[canonical(cfg)]
        acc, lat = row["accuracy"], row["latency_ms"]
        violations = self.space.violations({"accuracy_drop_pts": 100 * (self.base_acc - acc), "latency_ms": lat})
        dominated = (self.early_reject and cfg.finetune_epochs > 0
                     and dominated_before_training(lat, self.found, self.base_acc, self.tolerance) is not None)
        trained_before = self.trained.get(chain(cfg), 0)
        if dominated:  # the engine stops at the untrained probe: prune, export, quantize, time
            charged, ft = min(row["compress_s"] - row["ft_s"], row["wall_s"]), 0.0
            self.wall_s += charged
            self.rejected += 1
            records.set_rejected(trial, "dominated before fine-tuning (replay)")
            acc = dataclasses.replace(cfg, finetune_epochs=0)
            acc = self.table[canonical(acc)]["accuracy"]  # what the engine stores: the untrained probe's
        else:
            charged = self.cost(cfg)
            ft = max(0.0, charged - row["overhead_s"])
            self.wall_s += charged
            self.trained[chain(cfg)] = max(self.trained.get(chain(cfg), 0), cfg.finetune_epochs)
            self.points.append((acc, lat))
            self.evaluated += 1
        # what the engine stores on a trial (the front sampler reads its cost from them): seconds, training
        trial.set_user_attr(TRIAL_SECONDS, charged)
        trial.set_user_attr("finetune_seconds", ft)
        trial.set_user_attr("finetune_epochs_reused", min(trained_before, cfg.finetune_epochs) if not dominated else 0)
        if self.early_reject:  # on every trial, as the engine does: GPSampler needs the same constraints on all
            violations["dominated"] = 1.0 if dominated else 0.0
        for name, v in violations.items():
            trial.set_constraint(name, v)
        if all(v <= 0 for v in violations.values()):
            self.found.append((lat, acc))
        if self.reached_at is None and hypervolume(self.points, *self.ref) >= self.target_hv:
            self.reached_at = self.wall_s
            trial.study.stop()
        return acc, lat


def replay(df: pd.DataFrame, grid: Grid, base_acc: float, base_lat: float, sampler_name: str, seed: int,
           early_reject: bool, tolerance: float, anchors: bool = False) -> dict:
    space = dataclasses.replace(grid_space(grid), sampler=sampler_name,
                                max_accuracy_drop_pts=default_space().max_accuracy_drop_pts)
    table = {harness.row_config(r): r for r in df.to_dict("records")}
    ref = (base_acc - REF_DROP_PTS / 100, base_lat)
    target = HV_SHARE * hypervolume([(a, lt) for a, lt in zip(df.accuracy, df.latency_ms)], *ref)
    run = Replay(table, space, base_acc, ref, target, seed, early_reject, tolerance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, seed))
        # as a study stores them: the base (the hypervolume's corner for a sampler that reads it) and the space
        study.set_user_attr("base", {"accuracy": base_acc, "latency_ms": base_lat, "size_mb": 1.0,
                                     "val_total": round(base_acc * (1 - base_acc) / tolerance**2) if tolerance else None})
        records.set_study_space(study, {**space.to_dict(), "constraints": {"max_accuracy_drop_pts": REF_DROP_PTS}})
        if anchors:  # as a fresh engine study starts: quantization alone first
            queue_anchors(study, space)
        for _ in range(4 * space.n_configs):
            if run.reached_at is not None or len(run.seen) == len(distinct_models(space.configs())):
                break
            started = time.perf_counter()
            study.optimize(run, n_trials=1, catch=())
            run.sampler_s += time.perf_counter() - started  # the sampler's own seconds (GP fits a model per trial)
    if run.reached_at is not None:  # charged too: a real study waits for its sampler
        run.reached_at += run.sampler_s
    return {"sampler": sampler_name, "seed": seed, "early_reject": early_reject, "anchors": anchors,
            "wall_s_to_95pct": run.reached_at,
            "evaluated": run.evaluated, "rejected_early": run.rejected, "trials": len(study.trials),
            "sampler_s": run.sampler_s}


def _replay_process() -> None:
    """Set up a replay process once: optuna's log level as the parent's, and one torch thread (GPSampler fits
    with torch, and two processes each spinning two OpenMP threads on two cores ran the replay several times
    slower)."""
    import torch
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(logging.WARNING)


def _replay_job(df: pd.DataFrame, grid: Grid, base_acc: float, base_lat: float, tolerance: float,
                job: tuple[str, int, bool, bool]) -> dict:
    sampler_name, seed, early_reject, anchors = job
    return replay(df, grid, base_acc, base_lat, sampler_name, seed, early_reject, tolerance, anchors)


def bootstrap_ratio(a: pd.Series, b: pd.Series, n: int = 4000, seed: int = 0) -> list[float]:
    """5%, 50% and 95% quantiles of median(a) / median(b) over seeds resampled with replacement."""
    rng = np.random.default_rng(seed)
    a, b = a.to_numpy(float), b.to_numpy(float)
    ratios = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(n)]
    return [float(q) for q in np.quantile(ratios, [0.05, 0.5, 0.95])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", default=f"sqlite:///{RESULTS / 'search_efficiency.db'}")
    ap.add_argument("--prune-step", type=float, default=Grid.prune_step)
    ap.add_argument("--max-epochs", type=int, default=Grid.max_epochs)
    ap.add_argument("--subset", type=int, default=Grid.subset, help="fine-tune images per epoch")
    ap.add_argument("--replay-only", action="store_true", help="use the stored grid; run no training")
    ap.add_argument("--seeds", type=int, default=SEEDS, help=f"replay seeds per sampler and variant (default {SEEDS}; "
                    f"the issue's {ISSUE_SEEDS} take ~45 s)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="replay processes (default: one per core)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    grid = Grid(args.prune_step, args.max_epochs, args.subset)
    if not args.replay_only:
        run_grid(args.storage, grid, RESULTS / "search_efficiency_artifacts")

    from lepton_search import load
    result = load(args.storage, grid.study_name, artifacts=RESULTS / "search_efficiency_artifacts")
    base = result.base
    df = grid_table(args.storage, grid.study_name)
    df.to_csv(RESULTS / f"search_efficiency{grid.suffix}_grid.csv", index=False)
    ref = (base.accuracy - REF_DROP_PTS / 100, base.latency_ms)
    grid_hv = hypervolume(list(zip(df.accuracy, df.latency_ms)), *ref)
    # With reuse each chain trains once, to its last epoch (ft_total_s of its longest config; epochs an earlier,
    # interrupted run of the grid trained count too); without, every config trains all its epochs.
    chains = df.assign(chain=[chain(canonical(CompressionConfig.from_dict(r))) for r in df.to_dict("records")])
    grid_wall = float(df.overhead_s.sum() + chains.groupby("chain").ft_total_s.max().sum())
    grid_wall_no_reuse = float(df.wall_s_without_reuse.sum())

    tolerance = accuracy_standard_error(base.accuracy, int(base.workload_info.get("val", 0)))
    seeds = tuple(range(args.seeds))
    jobs = [(s, seed, early, anchors) for s in SAMPLERS for early, anchors in VARIANTS for seed in seeds]
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_replay_process) as pool:
        runs = list(pool.map(functools.partial(_replay_job, df, grid, base.accuracy, base.latency_ms, tolerance),
                             jobs, chunksize=10))
    runs_df = pd.DataFrame(runs)
    first = runs_df[runs_df.seed.isin(seeds[:ISSUE_SEEDS])]
    summary = (runs_df.groupby(["sampler", "early_reject", "anchors"])
               .agg(median_wall_s=("wall_s_to_95pct", "median"), reached=("wall_s_to_95pct", "count"),
                    q25_wall_s=("wall_s_to_95pct", lambda w: w.quantile(0.25)),
                    q75_wall_s=("wall_s_to_95pct", lambda w: w.quantile(0.75)),
                    median_evaluated=("evaluated", "median"), median_rejected=("rejected_early", "median"),
                    median_sampler_s=("sampler_s", "median"))
               .reset_index()
               .merge(first.groupby(["sampler", "early_reject", "anchors"]).wall_s_to_95pct.median()
                      .rename(f"median{ISSUE_SEEDS}_wall_s").reset_index()))
    summary["share_of_grid_wall"] = summary.median_wall_s / grid_wall
    summary[f"share{ISSUE_SEEDS}_of_grid_wall"] = summary[f"median{ISSUE_SEEDS}_wall_s"] / grid_wall
    plain_random = summary[(summary.sampler == "random") & ~summary.early_reject & ~summary.anchors]
    summary["vs_random"] = summary.median_wall_s / plain_random.median_wall_s.iloc[0]
    summary[f"vs_random{ISSUE_SEEDS}"] = summary[f"median{ISSUE_SEEDS}_wall_s"] / plain_random[f"median{ISSUE_SEEDS}_wall_s"].iloc[0]
    # The default study rejects early (early_reject: dominated) and starts from its anchors, so the default sampler
    # is chosen with both on; the bar compares it with RandomSampler alone. The default space's sampler stays
    # unless another is faster beyond the seeds' noise (the 95% bootstrap quantile of its median ratio below 1):
    # with 100 seeds GP and TPE came out 0.4% apart, which says nothing about which is faster.
    engine_runs = runs_df[runs_df.early_reject & runs_df.anchors]
    incumbent = default_space().sampler
    versus = {s: bootstrap_ratio(engine_runs[engine_runs.sampler == s].wall_s_to_95pct,
                                 engine_runs[engine_runs.sampler == incumbent].wall_s_to_95pct)
              for s in SAMPLERS if s != incumbent}
    faster = {s: q[1] for s, q in versus.items() if q[2] < 1.0}
    default = min(faster, key=faster.get) if faster else incumbent
    chosen = summary[(summary.sampler == default) & summary.early_reject & summary.anchors]

    out = {
        "host": str(this_cpu()), "workload": "fashion-mnist-cnn", "grid_extent": dataclasses.asdict(grid), "space": grid_space(grid).to_dict(),
        "base": {"accuracy": base.accuracy, "latency_ms": base.latency_ms},
        "reference_point": {"accuracy": ref[0], "latency_ms": ref[1]},
        "grid": {"configs": len(df), "hypervolume": grid_hv, "wall_s": grid_wall,
                 "wall_s_without_reuse": grid_wall_no_reuse,
                 "finetune_s": float(df.ft_s.sum()), "finetune_s_without_reuse": float(df.ft_total_s.sum())},
        "hv_share": HV_SHARE, "runs": runs, "summary": summary.to_dict("records"), "default_sampler": default,
        "default_choice": {"incumbent": incumbent, "median_ratio_to_incumbent_bootstrap_5_50_95": versus},
        "early_reject_tolerance": tolerance,
        "bar": {"seeds": len(seeds), "default_share_of_grid_wall": float(chosen.share_of_grid_wall.iloc[0]),
                "default_vs_random": float(chosen.vs_random.iloc[0]),
                "default_vs_random_bootstrap_5_50_95": bootstrap_ratio(
                    engine_runs[engine_runs.sampler == default].wall_s_to_95pct,
                    runs_df[(runs_df.sampler == "random") & ~runs_df.early_reject & ~runs_df.anchors].wall_s_to_95pct),
                # what the sampler adds: random with the same rule and anchors
                "default_vs_random_with_rule_and_anchors": float(
                    chosen.median_wall_s.iloc[0] / summary[(summary.sampler == "random") & summary.early_reject
                                                           & summary.anchors].median_wall_s.iloc[0]),
                f"default_share_of_grid_wall_first{ISSUE_SEEDS}": float(chosen[f"share{ISSUE_SEEDS}_of_grid_wall"].iloc[0]),
                f"default_vs_random_first{ISSUE_SEEDS}": float(chosen[f"vs_random{ISSUE_SEEDS}"].iloc[0])},
    }
    # another seed count writes beside the committed 100-seed results, never over them
    tag = grid.suffix + ("" if args.seeds == SEEDS else f"-seeds{args.seeds}")
    (RESULTS / f"search_efficiency{tag}.json").write_text(json.dumps(out, indent=2, default=str))
    print(f"host: {out['host']}")
    print(f"grid: {len(df)} configs, wall {grid_wall:.0f} s with reuse, {grid_wall_no_reuse:.0f} s without "
          f"({grid_wall_no_reuse / grid_wall:.2f}x); hypervolume {grid_hv:.5f} (ref: acc {ref[0]:.4f}, {ref[1]:.3f} ms)")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    bar = out["bar"]
    print(f"bar: {default} with rule and anchors {bar['default_share_of_grid_wall']:.1%} of the grid's seconds, "
          f"{bar['default_vs_random']:.2f}x random alone (bootstrap 5-95%: "
          f"{bar['default_vs_random_bootstrap_5_50_95'][0]:.2f}-{bar['default_vs_random_bootstrap_5_50_95'][2]:.2f}), "
          f"{bar['default_vs_random_with_rule_and_anchors']:.2f}x random with both")
    print(f"early rejection tolerance: {tolerance:.4f} (one standard error of the base's validation accuracy)")
    print(f"default sampler: {default} (with early rejection and anchors, median seconds over {len(seeds)} seeds to "
          f"{HV_SHARE:.0%} of the grid hypervolume, sampler seconds charged; the default space's {incumbent} stays "
          f"unless another is faster beyond noise). Median ratio to {incumbent}, bootstrap 5/50/95%: "
          + ", ".join(f"{k} {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}" for k, q in versus.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
