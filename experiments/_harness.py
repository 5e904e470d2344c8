"""What the front experiments share: export a study's base and Pareto files, re-time them interleaved, pick on
validation, score on test.

Each file is timed once per round, `rounds` rounds, with the same ONNX Runtime options (1 thread, batch 1,
100 runs after 20 warm-up, on the workload's real validation samples); a file's figure is the minimum of its
per-round medians, and speed-ups are ratios of those figures within one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency import HostCpuLatency
from lepton_search.space import CompressionConfig

HARNESS = "ONNX Runtime CPU, 1 thread, batch 1, 100 runs after 20 warm-up; rounds interleaved; min of medians"


def remeasure(paths: Mapping[str, Path], inputs: Mapping[str, np.ndarray], rounds: int = 3) -> dict[str, list[float]]:
    """p50 of every file per round, files interleaved so drift hits all alike."""
    target = HostCpuLatency(threads=1, batch_size=1, runs=100, warmup=20)
    out: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            out[name].append(target.latency(path, inputs).p50_ms)
    return out


def export_front(result: Any, folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The base file and every Pareto trial's file under `folder`; (name -> path, name -> pareto row)."""
    paths = {"base": folder / "base.onnx"}
    with result.artifact_store.open_reader(result.base.onnx_artifact_id) as r:
        paths["base"].write_bytes(r.read())
    rows = {}
    for row in result.pareto().itertuples():
        name = f"trial {row.number}"
        paths[name] = result.export(int(row.number), folder / f"t{row.number}")
        rows[name] = row
    return paths, rows


def accuracies(paths: Mapping[str, Path], workload: Any, split: str) -> dict[str, float]:
    return {name: onnx_accuracy(path, workload, split).accuracy for name, path in paths.items()}


def points(rows: Mapping[str, Any], val: Mapping[str, float], test: Mapping[str, float],
           lat: Mapping[str, list[float]]) -> list[dict]:
    """One dict per Pareto trial: config, validation and test accuracy and drop, latency, speed-up."""
    best = {n: min(v) for n, v in lat.items()}
    out = []
    for name, row in rows.items():
        cfg = CompressionConfig.from_dict({k: getattr(row, k) for k in CompressionConfig.__dataclass_fields__})
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
    """Binomial standard error of an accuracy measured on `n` samples, in points."""
    return 100 * math.sqrt(accuracy * (1 - accuracy) / n)
