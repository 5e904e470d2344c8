"""Picking a deployment config from a finished study, as plain data (no plotly, no optuna-dashboard).

`recommend` answers "the fastest model within my limits", `knee` "the best balance", `hypervolume`
"how good is this front as a whole", and `roles` labels each Pareto trial with the questions it answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lepton_search import records
from lepton_search.errors import ConfigError
from lepton_search.results.pareto import non_dominated
from lepton_search.space import KNOB_NAMES
from lepton_search.tasks import Task, format_drop

if TYPE_CHECKING:
    from lepton_search.results.frame import StudyFrame

ROLE_DROPS_PTS = (0.5, 1.0, 2.0)
BASE_TRIAL = -1  # `Pick.trial` of the base: the unmodified model, a candidate of every pick
DEFAULT_HV_DROP_PTS = 1.0  # reference drop for hypervolume when the study has no accuracy constraint
_LIMIT_COLUMNS = {"max_accuracy_drop_pts": "accuracy_drop_pts", "max_metric_drop": "metric_drop",
                  "max_latency_ms": "latency_ms", "max_size_mb": "size_mb"}


@dataclass(frozen=True)
class Pick:
    """One recommended trial: its config (every knob) and measured figures."""

    trial: int
    config: Mapping[str, Any]
    accuracy: float  # the task's score (higher is better); `metric` shows it as a person reads it
    accuracy_drop_pts: float | None  # classification only
    latency_ms: float
    size_mb: float
    speedup: float
    metric: str = "accuracy"
    metric_value: float | None = None  # `accuracy` in the metric's own sign (RMSE, not -RMSE)
    metric_drop: float | None = None  # worse than the base, in the metric's unit
    drop_unit: str = "pt"

    def __getattr__(self, name: str) -> Any:  # pick.bits, pick.prune_ratio, ... for every knob
        config = self.__dict__.get("config", {})
        if name in config:
            return config[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    @property
    def is_base(self) -> bool:
        """True when the pick is to keep the unmodified base: no trial beat it within the limits."""
        return self.trial == BASE_TRIAL

    def label(self) -> str:
        value = self.accuracy if self.metric_value is None else self.metric_value
        drop = self.accuracy_drop_pts if self.metric_drop is None else self.metric_drop
        shown = (f"acc {value:.4f}" if self.metric == "accuracy" else f"{self.metric} {value:.4g}") + (
            f" (drop {format_drop(drop, self.drop_unit)})")
        if self.is_base:
            return (f"the base (keep the unmodified model: no trial is faster within the limits) -> "
                    f"{shown}, {self.latency_ms:.4g} ms (x1.00), {self.size_mb:.4g} MB")
        knobs = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.config.items())
        return f"trial {self.trial}: {knobs} -> {shown}, {self.latency_ms:.4g} ms (x{self.speedup:.2f}), {self.size_mb:.4g} MB"


def candidates(result: StudyFrame) -> pd.DataFrame:
    """COMPLETE, feasible trials, one row per distinct config (first trial of each), every knob filled in."""
    return result.candidates()


def _to_pick(row: pd.Series, task: Task) -> Pick:
    config = {k: (v.item() if hasattr(v, "item") else v) for k, v in row[list(KNOB_NAMES)].items()}
    drop_pts = row.get("accuracy_drop_pts")
    return Pick(trial=int(row["number"]), config=config, accuracy=float(row["accuracy"]),
                accuracy_drop_pts=None if pd.isna(drop_pts) else float(drop_pts), latency_ms=float(row["latency_ms"]),
                size_mb=float(row["size_mb"]), speedup=float(row["speedup"]), metric=task.metric,
                metric_value=task.display(float(row["accuracy"])), metric_drop=float(row["metric_drop"]),
                drop_unit=task.drop_unit)


def base_pick(result: StudyFrame) -> Pick | None:
    """The base as a pick (every knob at its no-op, drop 0, speed-up 1); None before the search measured it."""
    from lepton_search.knobs import KNOBS

    base = result.base
    if base is None:
        return None
    task = result.task
    return Pick(trial=BASE_TRIAL, config={k.name: k.noop for k in KNOBS}, accuracy=float(base.accuracy),
                accuracy_drop_pts=0.0 if task.name == "classification" else None, latency_ms=float(base.latency_ms),
                size_mb=float(base.size_mb), speedup=1.0, metric=task.metric, metric_value=task.display(base.accuracy),
                metric_drop=0.0, drop_unit=task.drop_unit)


def _base_fits(base: Pick, limits: dict[str, float]) -> bool:
    figures = {"max_accuracy_drop_pts": 0.0, "max_metric_drop": 0.0, "max_latency_ms": base.latency_ms,
               "max_size_mb": base.size_mb}
    return all(figures[name] <= limit + _slack(limit) for name, limit in limits.items())


def _check_limits(limits: dict[str, float | None]) -> dict[str, float]:
    out = {}
    for name, value in limits.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(name, value, "must be a finite number (or None for no limit)")
        if name not in ("max_accuracy_drop_pts", "max_metric_drop") and value <= 0:
            raise ConfigError(name, value, "must be > 0")
        out[name] = float(value)
    return out


def _slack(limit: float) -> float:
    # (base - acc) * 100 is not exact in floating point: a 1.0000000000000009 pt drop is "within 1 pt".
    return 1e-9 * max(1.0, abs(limit))


def recommend(result: StudyFrame, *, max_accuracy_drop_pts: float | None = None,
              max_latency_ms: float | None = None, max_size_mb: float | None = None,
              max_metric_drop: float | None = None) -> Pick:
    """The fastest COMPLETE feasible config within every given limit; ties go to the more accurate one. The base
    is a candidate too: when no trial within the limits is faster than the unmodified model, the pick is the base
    (`Pick.is_base`): keep it (a sub-ms GRU's "pick" was once its own FP32 graph, fine-tuned, timed slower).

    When neither a config nor the base fits, raises ConfigError naming the closest miss (smallest total excess, each limit's
    excess measured in units of that column's spread over the trials).

    Example:
        >>> recommend(result, max_accuracy_drop_pts=1.0).trial  # doctest: +SKIP
        7
    """
    task = result.task
    if max_accuracy_drop_pts is not None and task.name != "classification":
        raise ConfigError("max_accuracy_drop_pts", max_accuracy_drop_pts,
                          f"task {task.name!r} has no accuracy; use max_metric_drop ({task.metric} increase"
                          f"{', ' + task.drop_unit if task.drop_unit else ''})")
    limits = _check_limits({"max_accuracy_drop_pts": max_accuracy_drop_pts, "max_latency_ms": max_latency_ms,
                            "max_size_mb": max_size_mb, "max_metric_drop": max_metric_drop})
    df = candidates(result)
    if df.empty:
        raise ConfigError("study", result.study.study_name, "has no COMPLETE feasible trial yet; run more trials")
    base = base_pick(result)
    keep_base = base is not None and _base_fits(base, limits)
    fits = np.ones(len(df), dtype=bool)
    for name, limit in limits.items():
        fits &= (df[_LIMIT_COLUMNS[name]] <= limit + _slack(limit)).to_numpy()
    if fits.any():
        ok = df[fits].sort_values(["latency_ms", "accuracy", "size_mb", "number"], ascending=[True, False, True, True])
        best = _to_pick(ok.iloc[0], task)
        return base if keep_base and base.latency_ms <= best.latency_ms else best
    if keep_base:
        return base
    excess = np.zeros(len(df))
    for name, limit in limits.items():
        col = df[_LIMIT_COLUMNS[name]].astype(float)
        spread = float(col.max() - col.min()) or max(abs(limit), 1e-12)
        excess += np.clip(col.to_numpy() - limit, 0, None) / spread
    row = df.iloc[int(np.argmin(excess))]
    missed = [(n, lim) for n, lim in limits.items() if row[_LIMIT_COLUMNS[n]] > lim + _slack(lim)]
    detail = ", ".join(f"{_LIMIT_COLUMNS[n]} {row[_LIMIT_COLUMNS[n]]:.4g} > {lim:g}" for n, lim in missed)
    field, value = missed[0]
    raise ConfigError(field, value, f"no feasible trial fits every limit; closest miss is trial {int(row['number'])} "
                                    f"({detail}); loosen that limit or run more trials")


def knee(result: StudyFrame, *, front: pd.DataFrame | None = None) -> Pick:
    """The Pareto point nearest the ideal corner once each objective is scaled to the front's range [0, 1]. The base
    is a point of that front: when it is the knee, the pick is the base (`Pick.is_base`).

    `front`: an already computed `result.pareto()` (workers add trials between two reads of a live study)."""
    front = result.pareto() if front is None else front
    if front.empty:
        raise ConfigError("study", result.study.study_name, "has no Pareto front yet; run more trials")
    base = base_pick(result)
    row = {} if base is None else {"number": BASE_TRIAL, **base.config, "speedup": 1.0,
                                   **{o: getattr(result.base, o, None) for o in result.objectives}}
    if base is not None and all(row[o] is not None for o in result.objectives):  # the base joins the front unless
        # a trial dominates it
        directions = [d.name.lower() for d in result.study.directions]
        points = np.vstack([front[result.objectives].to_numpy(dtype=float),
                            [[row[o] for o in result.objectives]]])
        if non_dominated(points, directions)[-1]:
            front = pd.concat([front, pd.DataFrame([row])], ignore_index=True)
    dist = np.zeros(len(front))
    for name, direction in zip(result.objectives, result.study.directions):
        col = front[name].to_numpy(dtype=float)
        span = col.max() - col.min()
        norm = (col - col.min()) / span if span > 0 else np.zeros_like(col)
        gap = 1.0 - norm if direction.name == "MAXIMIZE" else norm
        dist += gap**2
    front = front.assign(_dist=dist).sort_values(["_dist", "latency_ms", "number"])
    if int(front.iloc[0]["number"]) == BASE_TRIAL and base is not None:
        return base
    return _to_pick(front.iloc[0], result.task)


def hypervolume_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume dominated by `points` (all objectives minimised) inside the box bounded by `ref`.

    Slices along the last axis and recurses (fine for the tens of points a study has).

    Example:
        >>> hypervolume_min(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0]))
        3.0
    """
    pts = np.asarray(points, dtype=float).reshape(-1, len(ref))
    ref = np.asarray(ref, dtype=float)
    pts = pts[(pts < ref).all(axis=1)]  # points on or past the reference add nothing
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    pts = pts[np.argsort(pts[:, -1], kind="stable")]
    volume = 0.0
    for i in range(len(pts)):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if upper > pts[i, -1]:
            volume += (upper - pts[i, -1]) * hypervolume_min(pts[: i + 1, :-1], ref[:-1])
    return float(volume)


def hypervolume(result: StudyFrame, *, max_accuracy_drop_pts: float | None = None,
                max_metric_drop: float | None = None) -> float:
    """Hypervolume of the front, the score in drop units (accuracy in points; RMSE in its unit; maximised) x
    latency in ms (minimised) [x size in MB].

    Reference point: (base score - allowed drop, base latency [, base size]). The allowed drop is the one
    given, else the study's constraint, else 1 point (a classifier) or 2% of the base's metric. Larger is
    better; 0 means no front point is both within the drop and faster than the base.
    """
    base = result.base
    if base is None:
        raise ConfigError("study", result.study.study_name, "has no base metrics yet; run the search first")
    task = result.task
    constraints = (records.study_space(result.study) or {}).get("constraints", {})
    drop = max_metric_drop if max_metric_drop is not None else max_accuracy_drop_pts
    if drop is None:
        drop = next((constraints[k] for k in ("max_metric_drop", "max_accuracy_drop_pts")
                     if constraints.get(k) is not None), None)  # stored spaces list unset limits as None
    if drop is None:
        drop = DEFAULT_HV_DROP_PTS if task.drop_unit == "pt" else task.drop_steps(base.accuracy)[1]
    drop = _check_limits({"max_metric_drop": drop})["max_metric_drop"]
    scale = task.score_scale()
    front = result.pareto()
    cols, ref = ["accuracy", "latency_ms"], [-(base.accuracy * scale - drop), base.latency_ms]
    if "size_mb" in result.objectives:
        cols.append("size_mb")
        ref.append(base.size_mb)
    if front.empty:
        return 0.0
    pts = front[cols].to_numpy(dtype=float, copy=True)
    pts[:, 0] = -pts[:, 0] * scale  # the score in drop units, negated so that every column is minimised
    return hypervolume_min(pts, np.array(ref))


def fastest_within(result: StudyFrame) -> list[tuple[str, Pick | ConfigError]]:
    """("fastest within <drop> of base", its pick, or why there is none) for each of the task's drop steps
    (0.5 / 1 / 2 pt for a classifier): what the dashboard's role notes and the HTML report name."""
    task, base = result.task, result.base
    out: list[tuple[str, Pick | ConfigError]] = []
    for drop in task.drop_steps(base.accuracy) if base is not None else ROLE_DROPS_PTS:
        try:
            found: Pick | ConfigError = recommend(result, max_metric_drop=drop)
        except ConfigError as exc:
            found = exc
        out.append((f"fastest within {task.drop_label(drop)} of base", found))
    return out


def roles(result: StudyFrame) -> dict[int, list[str]]:
    """Pareto trial number -> the roles it plays ("fastest within 1 pt of base", "knee", "smallest")."""
    front = result.pareto()
    out: dict[int, list[str]] = {int(n): [] for n in front["number"]}
    if front.empty:
        return out
    for label, pick in fastest_within(result):
        if isinstance(pick, Pick) and pick.trial in out:
            out[pick.trial].append(label)
    balanced = knee(result, front=front)  # the same front: workers may add trials meanwhile
    if balanced.trial in out:  # (the base as the knee has no trial row)
        out[balanced.trial].append("knee")
    smallest = front.sort_values(["size_mb", "latency_ms", "number"]).iloc[0]
    out[int(smallest["number"])].append("smallest")
    return out
