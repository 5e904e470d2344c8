"""Calibrate a profile: fit its efficiency factors and overheads to measured (ONNX file, latency) pairs.

The fit is least squares on log latency (every graph counts by its relative error), over the log of
each factor, with a weak pull towards the profile's own figures so that a factor the data says
nothing about stays where it was. The expected error written into the calibrated profile is the
held-out error: leave one architecture group out when there are several, else 5-fold.

Example:
    >>> fit = calibrate_profile("host-cpu-model", graphs_dir="graphs", csv_path="measurements.csv")  # doctest: +SKIP
    >>> fit.heldout["within_10pct"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError
from lepton_search.latency.cpu_identity import CpuIdentity
from lepton_search.latency.device_profile import Profile, load_profile, save_profile, user_dir
from lepton_search.latency.graph_cost import analyze
from lepton_search.latency.predicted import WorkItems, params_of, predict_ms, work_items

PRIOR_WEIGHT = 0.02


@dataclass(frozen=True)
class Sample:
    """One measured graph: its name, architecture group, measured median and its work items."""

    file: str
    group: str
    measured_ms: float
    items: WorkItems


@dataclass(frozen=True)
class Fit:
    params: dict[str, float]
    heldout: dict[str, Any]  # within_10pct, spearman, mape_pct, predictions
    profile_path: Path | None = None


def read_measurements(csv_path: str | Path) -> dict[str, float]:
    """file name -> p50 ms, from a CSV written by `lepton-search measure`."""
    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError("csv_path", str(path), "pass the CSV written by `lepton-search measure DIR --out CSV`")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file", "p50_ms"} <= set(rows[0]):
        raise ConfigError("csv_path", str(path), "needs columns file and p50_ms (as `lepton-search measure` writes)")
    return {r["file"]: float(r["p50_ms"]) for r in rows}


def measured_cpu(csv_path: str | Path) -> dict[str, Any] | None:
    """The CPU and ONNX Runtime version a `lepton-search measure` CSV was timed on (`CpuIdentity.as_dict()`);
    None in a CSV written before `measure` recorded the CPU. The version comes from the `onnxruntime` column,
    else from `runtime` (`onnxruntime 1.32.0 CPU`, written before the column was)."""
    with open(csv_path, newline="") as fh:
        row = next(csv.DictReader(fh), {})
    if not row.get("cpu_model"):
        return None
    runtime = (row.get("runtime") or "").split()
    version = row.get("onnxruntime") or (runtime[1] if len(runtime) > 1 and runtime[0] == "onnxruntime" else None)
    return CpuIdentity(row["cpu_model"], row.get("cpu_vendor") or "unknown",
                       tuple((row.get("cpu_isa") or "").split()), version).as_dict()


def read_groups(graphs_dir: Path) -> dict[str, str]:
    """file -> architecture group from `manifest.csv` when present, else the file stem up to its first '-'."""
    manifest = graphs_dir / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            return {r["file"]: r["group"] for r in csv.DictReader(fh)}
    return {p.name: p.stem.split("-")[0] for p in graphs_dir.glob("*.onnx")}


def load_samples(graphs_dir: str | Path, measured: dict[str, float], profile: Profile) -> list[Sample]:
    graphs = Path(graphs_dir)
    groups = read_groups(graphs)
    samples = []
    for file, ms in sorted(measured.items()):
        path = graphs / file
        if not path.is_file():
            raise ConfigError("graphs_dir", str(graphs), f"does not hold {file!r} named in the measurements")
        batch = 1
        samples.append(Sample(file, groups.get(file, "all"), ms, work_items(analyze(path, batch_size=batch), profile)))
    return samples


def fit_params(samples: list[Sample], profile: Profile, *, prior_weight: float = PRIOR_WEIGHT) -> dict[str, float]:
    """Least squares on log latency over the log of the factors the samples exercise."""
    from scipy.optimize import least_squares

    prior = params_of(profile)
    used = {f"eff:{k}" for s in samples for k in s.items.eff_key} | {f"over:{k}" for s in samples for k in s.items.over_key}
    keys = sorted(k for k in prior if k in used or k in ("memory_efficiency", "graph_overhead_us"))
    keys = [k for k in keys if not k.startswith("eff:") or k in prior]
    x0 = np.log([prior[k] for k in keys])
    y = np.log([s.measured_ms for s in samples])

    def residuals(x: np.ndarray) -> np.ndarray:
        params = {**prior, **dict(zip(keys, np.exp(x)))}
        pred = np.log([predict_ms(s.items, params, profile.memory_gbps) for s in samples])
        return np.concatenate([pred - y, prior_weight * (x - x0)])

    sol = least_squares(residuals, x0, method="trf", bounds=(x0 - 8, x0 + 8), x_scale=1.0)
    return {**prior, **dict(zip(keys, np.exp(sol.x)))}


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Share within +-10%, Spearman rank correlation and MAPE (%) of predictions against measurements."""
    rel = predicted / measured - 1
    rank_p, rank_m = np.argsort(np.argsort(predicted)), np.argsort(np.argsort(measured))
    spearman = float(np.corrcoef(rank_p, rank_m)[0, 1]) if len(measured) > 1 else float("nan")
    return {"n": len(measured), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "spearman": spearman, "mape_pct": float(np.mean(np.abs(rel)) * 100)}


def heldout_predictions(samples: list[Sample], profile: Profile) -> tuple[np.ndarray, list[str]]:
    """Each sample predicted by a fit that never saw its group (or its fold, with one group)."""
    groups = sorted({s.group for s in samples})
    if len(groups) > 1:
        folds = [[i for i, s in enumerate(samples) if s.group == g] for g in groups]
        names = groups
    else:
        order = np.random.default_rng(0).permutation(len(samples))
        folds = [sorted(order[k::5].tolist()) for k in range(min(5, len(samples)))]
        names = [f"fold{k}" for k in range(len(folds))]
    pred = np.empty(len(samples))
    for fold in folds:
        train = [s for i, s in enumerate(samples) if i not in set(fold)]
        params = fit_params(train, profile)
        for i in fold:
            pred[i] = predict_ms(samples[i].items, params, profile.memory_gbps)
    return pred, names


def calibrated_data(profile: Profile, params: dict[str, float], heldout: dict[str, Any], n: int, *,
                    cpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The profile's YAML mapping with fitted figures, the held-out error and the CPU measured on written in."""
    data = copy.deepcopy(profile.raw)
    data.pop("cpu", None)
    if cpu is not None:
        data["cpu"] = cpu
    stamp = f"calibrated {dt.date.today().isoformat()} on {n} measured graphs (least squares, log latency)"

    def figure(value: float) -> dict[str, Any]:
        return {"value": round(float(value), 6), "source": stamp, "verified": True}

    for key, value in params.items():
        if key.startswith("eff:"):
            cls, prec = key[4:].split("/")
            data.setdefault("compute_efficiency", {}).setdefault(cls, {})[prec] = figure(value)
        elif key.startswith("over:"):
            data.setdefault("overhead_us", {})[key[5:]] = figure(value)
        else:
            data[key] = figure(value)
    data["source"] = "calibrated"
    data["expected_error_pct"] = round(heldout["mape_pct"], 2)
    data["calibration"] = {"date": dt.date.today().isoformat(), "graphs": n, "from_profile": profile.name,
                           **{k: heldout[k] for k in ("within_10pct", "spearman", "mape_pct", "scheme")}}
    return data


def calibrate_profile(target: str | Profile, *, graphs_dir: str | Path, csv_path: str | Path | None = None,
                      measured: dict[str, float] | None = None, out: str | Path | None = None,
                      cpu: dict[str, Any] | None = None) -> Fit:
    """Fit `target`'s factors to measurements of the graphs in `graphs_dir`; write `<target>-calibrated.yaml`.

    Measurements come from `csv_path` (a `lepton-search measure` CSV) or `measured` (file -> p50 ms); the
    CPU they were timed on is `cpu` (`CpuIdentity.as_dict()`), else the one `csv_path` records.
    """
    profile = target if isinstance(target, Profile) else load_profile(target)
    if measured is None:
        if csv_path is None:
            raise ConfigError("csv_path", None, "pass measurements (a CSV from `lepton-search measure`)")
        measured = read_measurements(csv_path)
    if cpu is None and csv_path is not None:
        cpu = measured_cpu(csv_path)
    if len(measured) < 6:
        raise ConfigError("measurements", len(measured), "need at least 6 measured graphs to fit and hold out")
    samples = load_samples(graphs_dir, measured, profile)
    pred, names = heldout_predictions(samples, profile)
    meas = np.array([s.measured_ms for s in samples])
    heldout = {**scores(pred, meas), "scheme": "leave-one-group-out" if names[0] != "fold0" else "5-fold",
               "predictions": {s.file: float(p) for s, p in zip(samples, pred)}}
    params = fit_params(samples, profile)
    name = profile.name.removesuffix("-calibrated") + "-calibrated"
    path = Path(out) if out is not None else user_dir() / f"{name}.yaml"
    save_profile(calibrated_data(profile, params, heldout, len(samples), cpu=cpu), path)
    return Fit(params, heldout, path)
