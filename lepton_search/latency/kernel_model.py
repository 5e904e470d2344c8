"""Kernel-table latency: split a graph into the kernels ORT runs, predict each from measured kernels, sum.

    latency   = per_call_us + sum over kernels of (t(kernel) + per_kernel_us[class])
    t(kernel) = f_c(size) * exp(g_c(features))
    f_c(size) = a_c + b_c * size      (a launch cost plus a cost per unit of work, fitted per class)

`size` is MACs for conv/gemm classes and elements moved for the others. g_c, the log of how much
slower or faster a kernel runs than f_c says, is a gradient-boosted tree ensemble (`_boost`) fitted
on the table's kernels of class c over `Kernel.features` (sizes, channel counts and their alignment,
the graph's weight footprint). f_c carries the prediction past the largest kernel measured; g_c the
shape effects f_c cannot see. per_call_us and the per-class per_kernel_us (the profiler's own cost per
kernel comes out negative) are a robust least-squares fit of each sweep graph's whole-call time minus
its profiled kernel times on its kernel counts. Graphs are emulated for the table's CPU (its NCHWc block,
`cpu_identity.recorded_block` of the CPU the table records), never for this host's. Reads the table CSV
written by `kernel_sweep`; imports neither torch nor onnxruntime.

Example:
    >>> table = KernelTable.load("experiments/results/host_kernel_table.csv")  # doctest: +SKIP
    >>> table.predict_ms("model.onnx")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError
from lepton_search.latency import _boost
from lepton_search.latency._base import Inputs, LatencyEstimate, LatencyModel, batch_of
from lepton_search.latency.cpu_identity import LEGACY_BLOCK, CpuIdentity, mismatch, recorded_block, this_cpu
from lepton_search.latency.kernels import MAC_CLASSES, Kernel, emulate

RIDGE = 0.05  # pulls a class's per-kernel overhead towards the shared one (relative units, see fit)


def _size(k: Kernel) -> float:
    return max(k.macs, 1.0) if k.cls in MAC_CLASSES else float(k.in_elems + k.out_elems + 1)


def fit_affine(sizes: np.ndarray, us: np.ndarray) -> tuple[float, float]:
    """(a, b) >= 0 minimising the relative error of a + b * size against `us` (launch + work)."""
    us = np.maximum(us, 0.05)
    design = np.stack([np.ones_like(sizes), sizes], axis=1) / us[:, None]
    target = np.ones_like(us)
    (a, b), *_ = np.linalg.lstsq(design, target, rcond=None)
    if a < 0 or b < 0:  # one of the two terms is not supported by the data: fit the other alone
        a_only = float(np.sum(design[:, 0]) / np.sum(design[:, 0] ** 2))
        b_only = float(np.sum(design[:, 1]) / np.sum(design[:, 1] ** 2))
        err_a = np.sum((design[:, 0] * a_only - 1) ** 2)
        err_b = np.sum((design[:, 1] * b_only - 1) ** 2)
        a, b = (a_only, 0.0) if err_a <= err_b else (0.0, b_only)
    return float(a), float(b)


def _affine(a: float, b: float, size: np.ndarray | float) -> np.ndarray:
    """f_c(size) = a + b * size, kept above 1 ns."""
    return np.maximum(a + b * np.asarray(size, dtype=float), 1e-3)


@dataclass(frozen=True)
class _ClassTable:
    a: float
    b: float
    shape: Any  # log(us / f_c(size)) from the kernel's features: a `_boost.Boosted`, or what `fit_shape` made
    n: int

    def times(self, kernels: list[Kernel]) -> np.ndarray:
        ratio = self.shape.predict(np.array([k.features() for k in kernels]))
        return _affine(self.a, self.b, [_size(k) for k in kernels]) * np.exp(ratio)


class KernelTable:
    """Measured kernels by class, plus the per-call and per-kernel (per class) overheads of the runtime."""

    def __init__(self, kernels: list[Kernel], us: list[float], *, per_call_us: float,
                 per_kernel_us: float | dict[str, float], meta: dict[str, Any] | None = None,
                 graph_us: dict[str, float] | None = None, seed: int = 0,
                 fit_shape: Callable[..., Any] = _boost.fit) -> None:
        self.per_call_us = per_call_us
        self.per_kernel_us = per_kernel_us if isinstance(per_kernel_us, dict) else {"*": float(per_kernel_us)}
        self.meta = meta or {}
        self._kernels, self._us, self._seed = kernels, us, seed
        self._fit_shape = fit_shape  # (x, y, seed=) -> a model with predict(x): how g_c is fitted
        self._classes: dict[str, _ClassTable] | None = None
        self.graph_us = graph_us or {}  # whole-call time of each sweep graph when the table was measured

    @property
    def block(self) -> int:
        """The NCHWc block of the CPU the table was measured on (16 for a table that records no CPU): graphs
        are emulated with it, as ORT runs them there."""
        return recorded_block(self.meta.get("cpu"))

    @property
    def drift(self) -> float:
        """How much slower (>1) the device runs now than when the table was measured, as last re-timed
        (`kernel_calibrate.refresh`); 1 if never. Every prediction is scaled by it."""
        return float(self.meta.get("drift", {}).get("scale", 1.0))

    @property
    def classes(self) -> dict[str, _ClassTable]:
        """Per table class: f_c and the boosted g_c, fitted on first use (seconds for a large table; listing
        targets or describing one never pays it)."""
        if self._classes is None:
            by_cls: dict[str, tuple[list, list, list]] = {}
            for k, t in zip(self._kernels, self._us):
                f, s, y = by_cls.setdefault(k.table_class, ([], [], []))
                f.append(k.features())
                s.append(_size(k))
                y.append(max(t, 0.05))
            self._classes = {}
            for c, (f, s, y) in sorted(by_cls.items()):
                sizes, times = np.array(s), np.array(y)
                a, b = fit_affine(sizes, times)
                ratio = np.log(times / _affine(a, b, sizes))
                self._classes[c] = _ClassTable(a, b, self._fit_shape(np.array(f), ratio, seed=self._seed), len(times))
        return self._classes

    def overhead_us(self, cls: str) -> float:
        """The per-kernel overhead of class `cls` (the shared figure for a class the fit did not see)."""
        return self.per_kernel_us.get(cls, self.per_kernel_us["*"])

    @classmethod
    def load(cls, path: str | Path) -> KernelTable:
        """A table written by `kernel_sweep.write_table` (kernels CSV + `.graphs.csv` beside it)."""
        path = Path(path)
        graphs_path = path.with_suffix(".graphs.csv")
        if not path.is_file() or not graphs_path.is_file():
            raise ConfigError("kernel table", str(path), "run the kernel sweep first (`lepton-search calibrate "
                                                         "--target host-cpu --kernels`)")
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(graphs_path, newline="") as fh:
            graphs = list(csv.DictReader(fh))
        return cls.from_rows(rows, graphs, meta=_read_meta(path.with_suffix(".json")))

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], graphs: list[dict[str, Any]], *,
                  meta: dict[str, Any] | None = None, fit_shape: Callable[..., Any] = _boost.fit) -> KernelTable:
        """A table from kernel rows and per-graph rows (the dicts `kernel_sweep.ingest` returns); `meta["cpu"]`:
        the CPU they were measured on, whose NCHWc block the rows' kernels carry."""
        block = recorded_block((meta or {}).get("cpu"))
        kernels = [kernel_of_row(r, block=block) for r in rows]
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            by = counts.setdefault(str(r["graph"]), {})
            by[r["cls"]] = by.get(r["cls"], 0) + 1
        per_call, per_kernel = fit_class_overheads(graphs, [counts.get(str(g["graph"]), {}) for g in graphs])
        return cls(kernels, [float(r["us"]) for r in rows], per_call_us=per_call, per_kernel_us=per_kernel,
                   meta=meta, graph_us={str(g["graph"]): float(g["total_us"]) for g in graphs}, fit_shape=fit_shape)

    @property
    def heldout_mape_pct(self) -> float | None:
        """The held-out MAPE measured when the table was built (`kernel_calibrate`), if recorded."""
        value = self.meta.get("heldout", {}).get("mape_pct")
        return None if value is None else float(value)

    def kernel_times(self, kernels: list[Kernel]) -> list[float]:
        """Predicted time (us) of each kernel; a class never measured counts as its per-kernel overhead only."""
        out = np.zeros(len(kernels))
        by_cls: dict[str, list[int]] = {}
        for i, k in enumerate(kernels):
            by_cls.setdefault(k.table_class if k.table_class in self.classes else k.cls, []).append(i)
        for c, idx in by_cls.items():
            if c in self.classes:  # (a table swept without DQ widths falls back to the plain class)
                out[idx] = self.classes[c].times([kernels[i] for i in idx])
        return out.tolist()

    def kernel_us(self, k: Kernel) -> float:
        """Predicted time of one kernel (see `kernel_times`)."""
        return self.kernel_times([k])[0]

    def predict_us(self, kernels: list[Kernel], *, times: list[float] | None = None) -> float:
        """Per-call overhead plus each kernel's time and (mostly negative: the profiler's own cost) overhead,
        a kernel counting at least nothing (a table fitted on few graphs can overshoot the correction);
        `times`: the kernels' `kernel_times`, when the caller has them already."""
        times = self.kernel_times(kernels) if times is None else times
        return self.drift * (self.per_call_us + sum(max(t + self.overhead_us(k.cls), 0.0)
                                                    for k, t in zip(kernels, times)))

    def predict_ms(self, onnx_path: str | Path, *, batch_size: int = 1) -> float:
        return self.predict_us(emulate(onnx_path, batch_size=batch_size, block=self.block)) / 1e3


def kernel_of_row(r: dict[str, Any], *, block: int = LEGACY_BLOCK) -> Kernel:
    """The kernel a table row (`kernel_sweep.COLUMNS`) describes, on a CPU of NCHWc block `block` (the
    table's); columns added later default to 0."""
    return Kernel(r["cls"], float(r["macs"]), int(float(r["in_elems"])), int(float(r["out_elems"])),
                  int(float(r["w_elems"])), int(float(r["k"])), int(float(r.get("graph_w_bytes") or 0)),
                  int(float(r.get("bits") or 0)), bool(int(float(r.get("runtime_w") or 0))), block=block)


def _read_meta(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def table_path(target: str) -> Path:
    """Where the kernel table of `target` lives: `<profile dir>/<target>.csv` (`host-cpu-kernels.csv`)."""
    from lepton_search.latency.device_profile import user_dir

    return user_dir() / f"{target}.csv"


def table_targets() -> list[str]:
    """Kernel-table targets found in the profile folder (`*-kernels.csv`), plus `host-cpu-kernels`."""
    from lepton_search.latency.device_profile import user_dir

    folder = user_dir()
    found = {p.stem for p in folder.glob("*-kernels.csv")} if folder.is_dir() else set()
    return sorted(found | {"host-cpu-kernels"})


def fit_class_overheads(graphs: list[dict[str, Any]], counts: list[dict[str, int]], *, ridge: float = RIDGE,
                        iterations: int = 10) -> tuple[float, dict[str, float]]:
    """(per-call us, {class: per-kernel us, "*": shared}) from whole-call minus profiled-kernel time.

    gap_g = per_call + sum over classes of n_g[class] * (shared + d[class]), in relative units (each
    graph weighted by 1 / its total time), d pulled to 0 by `ridge`; Huber-reweighted so that a graph
    timed during a burst of load does not move the fit."""
    if len(graphs) < 2:
        raise ConfigError("kernel table", len(graphs), "needs at least 2 fully emulated sweep graphs")
    classes = sorted({c for cnt in counts for c in cnt})
    total = np.array([float(g["total_us"]) for g in graphs])
    gap = total - np.array([float(g["kernel_sum_us"]) for g in graphs])
    n = np.array([[cnt.get(c, 0) for c in classes] for cnt in counts], dtype=float)
    design = np.concatenate([np.ones((len(graphs), 1)), n.sum(1, keepdims=True), n], axis=1) / total[:, None]
    y = gap / total
    penalty = np.concatenate([np.zeros((len(classes), 2)), np.eye(len(classes))], axis=1) * ridge
    weights = np.ones(len(graphs))
    for _ in range(iterations):
        a = np.concatenate([design * weights[:, None], penalty])
        coef, *_ = np.linalg.lstsq(a, np.concatenate([y * weights, np.zeros(len(classes))]), rcond=None)
        resid = np.abs(design @ coef - y)
        scale = max(float(np.median(resid)) * 1.5, 1e-3)
        weights = np.sqrt(np.minimum(1.0, scale / np.maximum(resid, 1e-12)))
    per_kernel = {c: float(coef[1] + coef[2 + i]) for i, c in enumerate(classes)}
    return float(max(coef[0], 0.0)), {"*": float(coef[1]), **per_kernel}


class KernelLatency(LatencyModel):
    """Latency predicted from a kernel table measured on a device (`source` calibrated).

    `expected_error_pct` defaults to the held-out MAPE stored with the table. A host target (`host`: the
    name starts with `host-cpu`) whose table was measured on another CPU than `here` (default: this one)
    predicts with no expected error and says why in `details["host_mismatch"]` and `describe()`.
    """

    source = "calibrated"

    def __init__(self, *, table: str | Path | KernelTable, name: str = "host-cpu-kernels",
                 expected_error_pct: float | None = None, host: bool | None = None,
                 here: CpuIdentity | None = None) -> None:
        self.name = name
        self.table_path = None if isinstance(table, KernelTable) else Path(table)
        self.table = table if isinstance(table, KernelTable) else KernelTable.load(table)
        self.expected_error_pct = expected_error_pct if expected_error_pct is not None else self.table.heldout_mape_pct
        recorded = self.table.meta.get("cpu")
        self.cpu_warning = None if recorded else "CPU unknown: the table was written before CPUs were recorded"
        is_host = name.startswith("host-cpu") if host is None else host
        self.host_mismatch = mismatch(recorded, here or this_cpu()) if is_host and recorded else None

    def latency(self, onnx_path: str | Path, inputs: Inputs | None = None) -> LatencyEstimate:
        batch = 1 if inputs is None else batch_of(inputs)
        kernels = emulate(onnx_path, batch_size=batch, block=self.table.block)
        times = self.table.kernel_times(kernels)
        ms = self.table.predict_us(kernels, times=times) / 1e3
        err = None if self.host_mismatch else self.expected_error_pct
        by_cls: dict[str, float] = {}
        for k, t in zip(kernels, times):
            by_cls[k.cls] = by_cls.get(k.cls, 0.0) + t / 1e3
        details: dict[str, Any] = {"kernels": len(kernels), "ms_by_class": by_cls}
        details.update((k, v) for k, v in (("host_mismatch", self.host_mismatch), ("cpu_warning", self.cpu_warning)) if v)
        return LatencyEstimate(p50_ms=ms, p90_ms=ms * (1 + (err or 0) / 100), source=self.source,
                               expected_error_pct=err, threads=1, batch_size=batch, details=details)

    def describe(self) -> dict[str, Any]:
        cpu = self.table.meta.get("cpu") or {}
        return {"name": self.name, "source": self.source,
                "expected_error_pct": None if self.host_mismatch else self.expected_error_pct,
                "device": self.table.meta.get("device", ""), "cpu": cpu.get("model", "CPU unknown"),
                "table": str(self.table_path or ""), "heldout": self.table.meta.get("heldout"),
                "drift": self.table.meta.get("drift"), "host_mismatch": self.host_mismatch,
                "warning": self.host_mismatch or self.cpu_warning}


def table_factory(target: str):
    """A `register_target` factory for the kernel table of `target` (read when the target is built)."""

    def factory(*, table: str | Path | KernelTable | None = None, **kwargs: Any) -> KernelLatency:
        path = table if table is not None else table_path(target)
        if not isinstance(path, KernelTable) and not Path(path).is_file():
            device = target.removesuffix("-kernels")
            raise ConfigError("target", target, f"no kernel table at {path}; run `lepton-search calibrate "
                                                f"--target {device} --kernels` first")
        return KernelLatency(table=path, name=target, **kwargs)

    return factory
