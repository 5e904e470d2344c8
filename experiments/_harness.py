"""What the front experiments share: export a study's base and Pareto files, re-time them interleaved, pick on
validation, score on test.

Each file is timed once per round, `rounds` rounds, with the same ONNX Runtime options (1 thread, batch 1,
100 runs after 20 warm-up, on the workload's real validation samples); a file's figure is the minimum of its
per-round medians, and speed-ups are ratios of those figures within one run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from lepton_search import search
from lepton_search.candidate import compress
from lepton_search.evaluate import onnx_accuracy
from lepton_search.knobs import KNOB_NAMES
from lepton_search.latency import HostCpuLatency
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace
from lepton_search.study import make_sampler, open_study
from lepton_search.tasks import accuracy_standard_error

HARNESS = "ONNX Runtime CPU, 1 thread, batch 1, 100 runs after 20 warm-up; rounds interleaved; min of medians"


def run_planned(workload: Any, space: SearchSpace, configs: Sequence[CompressionConfig], *, storage: str,
                study_name: str, artifacts: Path) -> Any:
    """The engine's search over a planned list of configs: each one not yet completed or queued is enqueued in
    the given order (chains in increasing epochs: a trial resumes the previous one's checkpoint), then
    `search` runs until all are COMPLETE (a resumed run trains nothing twice)."""
    study = open_study(storage, study_name, space, make_sampler(space, 0))
    taken = {tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)
             if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING)}
    for cfg in configs:
        params = space.params(cfg)
        if tuple(sorted(params.items())) not in taken:
            study.enqueue_trial(params)
    return search(workload, space, n_trials=len(configs), storage=storage, study_name=study_name,
                  artifacts=artifacts, callbacks=[], remeasure=False)


def remeasure(paths: Mapping[str, Path], inputs: Mapping[str, np.ndarray], rounds: int = 3,
              target: HostCpuLatency | None = None, *,
              inputs_of: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict[str, list[float]]:
    """p50 of every file per round, files interleaved so drift hits all alike (`target`: the harness's own
    1-thread, 100-run timer unless given). Each file is fed `inputs`, or its own from `inputs_of` (a file
    served at fewer tokens)."""
    target = target or HostCpuLatency(threads=1, batch_size=1, runs=100, warmup=20)
    inputs_of = inputs_of or {}
    out: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            out[name].append(target.latency(path, inputs_of.get(name, inputs)).p50_ms)
    return out


def export_front(result: Any, folder: Path, *, workload: Any = None) -> tuple[dict[str, Path], dict[str, Any]]:
    """The base file and every Pareto trial's file under `folder`; (name -> path, name -> pareto row). With
    `workload`, each export re-checks its file's accuracy on validation."""
    paths = {"base": folder / "base.onnx"}
    with result.artifact_store.open_reader(result.base.onnx_artifact_id) as r:
        paths["base"].write_bytes(r.read())
    rows = {}
    for row in result.pareto().itertuples():
        name = f"trial {row.number}"
        paths[name] = result.export(int(row.number), folder / f"t{row.number}", workload=workload)
        rows[name] = row
    return paths, rows


def row_config(row: Any) -> CompressionConfig:
    """The config of a `pareto()` / `trials()` row (a namedtuple or a dict); knobs it lacks take their no-op."""
    get = row.get if isinstance(row, Mapping) else lambda k, d=None: getattr(row, k, d)
    return CompressionConfig.from_dict({k: get(k) for k in KNOB_NAMES if get(k) is not None})


def accuracies(paths: Mapping[str, Path], workload: Any, split: str, *, transforms: Mapping[str, Any] | None = None,
               threads: int = 2) -> dict[str, float]:
    """name -> accuracy of each file on `split` (`transforms`: a file's input transform, e.g. its first tokens)."""
    transforms = transforms or {}
    return {name: onnx_accuracy(path, workload, split, threads=threads, transform=transforms.get(name)).accuracy
            for name, path in paths.items()}


def points(rows: Mapping[str, Any], val: Mapping[str, float], test: Mapping[str, float],
           lat: Mapping[str, list[float]]) -> list[dict]:
    """One dict per Pareto trial: config, validation and test accuracy and drop, latency, speed-up."""
    best = {n: min(v) for n, v in lat.items()}
    out = []
    for name, row in rows.items():
        cfg = row_config(row)
        out.append({
            "trial": int(row.number), "config": cfg.label(), "config_knobs": cfg.as_dict(),
            "val_accuracy": val[name], "val_drop_pts": 100 * (val["base"] - val[name]),
            "test_accuracy": test[name], "test_drop_pts": 100 * (test["base"] - test[name]),
            "latency_ms": best[name], "latency_ms_rounds": list(lat[name]), "speedup": best["base"] / best[name],
        })
    return sorted(out, key=lambda p: p["latency_ms"])


def choose(candidates: list[dict], val_threshold_pts: float) -> dict | None:
    """The fastest point whose validation drop is within the threshold (test accuracy never looked at)."""
    ok = [p for p in candidates if p["val_drop_pts"] <= val_threshold_pts]
    return min(ok, key=lambda p: p["latency_ms"]) if ok else None


def stderr_pts(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on `n` samples, in points (the study's own formula)."""
    return 100 * accuracy_standard_error(accuracy, n)


def compare_configs(workload: Any, configs: Sequence[CompressionConfig], settings: FinetuneSettings, folder: Path,
                    *, rounds: int, runs: int) -> list[dict]:
    """Build each config with the pipeline's `compress` (the first is the base), score it in ONNX Runtime on
    validation and test, time all files interleaved (1 thread, `runs` runs, min over `rounds` medians); one row
    per config with its drops and speed-up against the first."""
    rows, files = [], {}
    for config in configs:
        start = time.perf_counter()
        cand = compress(workload, config, folder / f"{config.label().replace('/', '_')}.onnx", settings=settings)
        files[config.label()] = cand.onnx_path
        val = onnx_accuracy(cand.onnx_path, workload, "val", threads=1)
        test = onnx_accuracy(cand.onnx_path, workload, "test", threads=1)
        rows.append({"config": config.as_dict(), "label": config.label(), "size_mb": cand.size_mb,
                     "params_ratio": cand.params_ratio, "macs_ratio": cand.macs_ratio,
                     "val_accuracy": val.accuracy, "test_accuracy": test.accuracy, "test_n": test.total,
                     "finetune_seconds": cand.finetune_seconds, "build_seconds": time.perf_counter() - start})
        print(f"built {config.label()}: val {val.accuracy:.4f} test {test.accuracy:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    times = remeasure(files, workload.sample_inputs(), rounds,
                      target=HostCpuLatency(threads=1, runs=runs, max_repeats=1))
    base = rows[0]
    base_ms = min(times[base["label"]])
    for row in rows:
        row["latency_ms"] = min(times[row["label"]])
        row["latency_ms_rounds"] = times[row["label"]]
        row["speedup"] = base_ms / row["latency_ms"]
        row["val_drop_pts"] = 100 * (base["val_accuracy"] - row["val_accuracy"])
        row["test_drop_pts"] = 100 * (base["test_accuracy"] - row["test_accuracy"])
    return rows
