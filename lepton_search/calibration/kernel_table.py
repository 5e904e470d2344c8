"""Build a device's kernel table: sweep graphs timed here (or on the device), ingested, scored held-out.

    here:        calibrate_kernels("host-cpu")                      # write, time, ingest, score, save
    elsewhere:   write_graphs("sweep/")                             # lepton-search calibrate --kernels --write-graphs
                 (device) lepton-search measure sweep --out m.csv --kernels
                 calibrate_kernels("rpi4", csv_path="m.csv", graphs_dir="sweep")

The held-out error stored with the table (and used as the target's expected error) comes from
k-fold cross-validation over the sweep graphs: each graph, in all its bit widths, is predicted by
a table built without any of its kernels. It is a figure for graphs like the sweep's; the error on
real architectures is what `experiments/latency_model_accuracy.py` measures.

Example:
    >>> built = calibrate_kernels("host-cpu", n_graphs=20)  # doctest: +SKIP
    >>> built.heldout["mape_pct"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lepton_search.calibration.kernel_sweep import ingest, read_kernel_csv, write_graphs, write_table
from lepton_search.calibration.profile_fit import measured_cpu, read_measurements, scores
from lepton_search.errors import ConfigError
from lepton_search.latency.cpu_identity import recorded_block
from lepton_search.latency.kernel_model import KernelTable, table_path
from lepton_search.latency.kernels import emulate
from lepton_search.paths import safe_name

HERE = ("host-cpu", "host-cpu-kernels")


@dataclass(frozen=True)
class BuiltTable:
    """Where the table went, the target it makes, its held-out scores, how many kernels and graphs it holds."""

    target: str
    path: Path
    heldout: dict[str, Any]
    n_kernels: int
    n_graphs: int


def _base(graph: str) -> str:
    return graph.rsplit("-b", 1)[0]


def crossval(graphs_dir: str | Path, rows: list[dict], graphs: list[dict], totals_ms: dict[str, float], *,
             cpu: dict[str, Any] | None = None, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Scores of whole-graph predictions, each from a table built without that sweep graph (any bit width);
    `cpu`: the CPU they were measured on (`CpuIdentity.as_dict()`), whose NCHWc block the graphs are emulated with."""
    names = sorted(Path(f).stem for f in totals_ms)
    bases = sorted({_base(n) for n in names})
    if len(bases) < 2:
        raise ConfigError("measurements", len(bases), "need at least 2 sweep graphs to hold one out")
    folds = min(folds, len(bases))
    order = np.random.default_rng(seed).permutation(len(bases))
    fold_of = {bases[j]: i % folds for i, j in enumerate(order)}
    emulated = {n: emulate(Path(graphs_dir) / f"{n}.onnx", block=recorded_block(cpu)) for n in names}
    pred: dict[str, float] = {}
    for f in range(folds):
        train_rows = [r for r in rows if fold_of[_base(r["graph"])] != f]
        train_graphs = [g for g in graphs if fold_of[_base(g["graph"])] != f]
        table = KernelTable.from_rows(train_rows, train_graphs, meta={"cpu": cpu})
        for n in names:
            if fold_of[_base(n)] == f:
                pred[n] = table.predict_us(emulated[n]) / 1e3
    p = np.array([pred[n] for n in names])
    m = np.array([totals_ms[f"{n}.onnx"] for n in names])
    return {**scores(p, m), "scheme": f"{folds}-fold over sweep graphs (all bit widths of a graph held out together)"}


def _sweep_seed(graphs_dir: str | Path, default: int) -> int:
    """The seed the sweep graphs were written with (`sweep.json` beside them), which `refresh` regenerates."""
    from lepton_search.calibration.kernel_sweep import SWEEP_META

    meta = Path(graphs_dir) / SWEEP_META
    return int(json.loads(meta.read_text()).get("seed", default)) if meta.is_file() else default


def _device(csv_path: Path) -> str:
    with open(csv_path, newline="") as fh:
        row = next(csv.DictReader(fh), {})
    return f"{row.get('device', '')} {row.get('runtime', '')}".strip()


def _out_path(out: str | Path | None, name: str) -> Path:
    if out is None:
        return table_path(name)
    out = Path(out)
    return out if out.suffix == ".csv" else out / f"{name}.csv"


def calibrate_kernels(target: str = "host-cpu", *, csv_path: str | Path | None = None,
                      graphs_dir: str | Path | None = None, out: str | Path | None = None, n_graphs: int = 600,
                      runs: int = 40, rounds: int = 3, seed: int = 0, verbose: bool = False) -> BuiltTable:
    """Build, score and save the kernel table of `target` (target `<target>-kernels`).

    With `csv_path` (a `lepton-search measure --kernels` CSV from the device) and `graphs_dir` (the folder
    it measured), nothing is timed here; otherwise the sweep graphs are written and timed on this host.
    """
    name = safe_name("target", target if target.endswith("-kernels") else f"{target}-kernels")
    measured_here = csv_path is None
    with tempfile.TemporaryDirectory(prefix="lepton_kernels_") as tmp:
        if csv_path is None:
            if target not in HERE:
                raise ConfigError("csv_path", None, f"{target} is not this machine: write the graphs with `lepton-search "
                                  f"calibrate --target {target} --kernels --write-graphs DIR`, run `lepton-search "
                                  "measure DIR --out m.csv --kernels` on the device, then pass --csv m.csv --graphs DIR")
            from lepton_search.latency.measure import measure_dir

            if graphs_dir is None:
                graphs_dir = Path(tmp) / "graphs"
                write_graphs(graphs_dir, n_graphs=n_graphs, seed=seed)
            csv_path = Path(tmp) / "measured.csv"
            measure_dir(graphs_dir, csv_path, runs=runs, kernels=True, rounds=rounds, verbose=verbose)
        elif graphs_dir is None:
            raise ConfigError("graphs_dir", None, "pass the folder of sweep graphs the CSV was measured on")
        from lepton_search.latency.measure import kernels_csv_path

        totals = read_measurements(csv_path)
        cpu = measured_cpu(csv_path)  # the device's CPU: ORT's kernels there follow its NCHWc block
        rows, graphs = ingest(graphs_dir, totals, read_kernel_csv(kernels_csv_path(csv_path)),
                              block=recorded_block(cpu), verbose=verbose)
        heldout = crossval(graphs_dir, rows, graphs, totals, cpu=cpu)
        meta = {"target": name, "device": _device(Path(csv_path)), "cpu": cpu,
                "date": dt.date.today().isoformat(),
                "measured_graphs": len(totals), "runs": runs if measured_here else None,
                "rounds": rounds if measured_here else None, "seed": _sweep_seed(graphs_dir, seed), "heldout": heldout}
    path = write_table(rows, graphs, _out_path(out, name), meta=meta)
    return BuiltTable(name, path, heldout, len(rows), len(graphs))


REFERENCE_GRAPHS = 24


def reference_graphs(folder: str | Path, *, n: int = REFERENCE_GRAPHS, seed: int = 0) -> list[Path]:
    """The FP32 forms of the first `n` sweep graphs of seed `seed`, named as the sweep named them
    (`gNNN-b32.onnx`): re-timing them says how much the device has drifted since its table was measured."""
    from lepton_search.calibration.kernel_graphs import random_graph
    from lepton_search.calibration.kernel_sweep import precision_forms

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for gi in range(n):
        model, shape = random_graph(rng)  # (drawn in the sweep's order, so graph gi is the sweep's graph gi)
        paths.append(folder / f"g{gi:03d}-b32.onnx")
        onnx.save(precision_forms(model, shape, 32, seed + gi), str(paths[-1]))
    return paths


def reference_ratios(table: KernelTable, measured_ms: dict[str, float]) -> np.ndarray:
    """Time now / time in the table of each reference graph the table holds (file name -> ms now)."""
    ratios = [ms * 1e3 / table.graph_us[Path(f).stem] for f, ms in measured_ms.items() if Path(f).stem in table.graph_us]
    if not ratios:
        raise ConfigError("kernel table", table.meta.get("target"), "holds none of the reference graphs; rebuild it "
                          "with `lepton-search calibrate --target host-cpu --kernels`")
    return np.array(ratios)


def drift_scale(table: KernelTable, measured_ms: dict[str, float]) -> float:
    """Median over the reference graphs (file name -> ms now) of time now / time in the table."""
    return float(np.median(reference_ratios(table, measured_ms)))


def refresh(target: str = "host-cpu-kernels", *, n: int = REFERENCE_GRAPHS, rounds: int = 3,
            path: str | Path | None = None) -> float:
    """Re-time `n` of the table's own sweep graphs here and store how much slower (or faster) this host runs
    now than when its table was measured (`drift` in the table's `.json`; every prediction is scaled by it).
    A shared host drifts by several percent over minutes to hours."""
    from lepton_search.latency.measure import measure_dir

    name = target if target.endswith("-kernels") else f"{target}-kernels"
    if name not in HERE:
        raise ConfigError("target", target, "only a table measured on this host can be refreshed here")
    path = Path(path) if path is not None else table_path(name)
    table = KernelTable.load(path)
    n = min(n, sum(g.endswith("-b32") for g in table.graph_us))  # (a small table holds fewer)
    with tempfile.TemporaryDirectory(prefix="lepton_refresh_") as tmp:
        reference_graphs(Path(tmp) / "graphs", n=n, seed=int(table.meta.get("seed", 0)))
        measure_dir(Path(tmp) / "graphs", Path(tmp) / "m.csv", runs=60, warmup=10, rounds=rounds, verbose=False)
        best = read_measurements(Path(tmp) / "m.csv")
    scale = drift_scale(table, best)
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta["drift"] = {"scale": scale, "date": dt.datetime.now().isoformat(timespec="seconds"), "graphs": len(best)}
    meta_path.write_text(json.dumps(meta, indent=2))
    return scale
