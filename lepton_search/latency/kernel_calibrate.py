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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError
from lepton_search.latency.calibrate import read_measurements, scores
from lepton_search.latency.kernel_model import KernelTable, table_path
from lepton_search.latency.kernel_sweep import ingest, read_kernel_csv, write_graphs, write_table
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
             folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Scores of whole-graph predictions, each from a table built without that sweep graph (any bit width)."""
    names = sorted(Path(f).stem for f in totals_ms)
    bases = sorted({_base(n) for n in names})
    if len(bases) < 2:
        raise ConfigError("measurements", len(bases), "need at least 2 sweep graphs to hold one out")
    folds = min(folds, len(bases))
    order = np.random.default_rng(seed).permutation(len(bases))
    fold_of = {bases[j]: i % folds for i, j in enumerate(order)}
    emulated = {n: emulate(Path(graphs_dir) / f"{n}.onnx") for n in names}
    pred: dict[str, float] = {}
    for f in range(folds):
        train_rows = [r for r in rows if fold_of[_base(r["graph"])] != f]
        train_graphs = [g for g in graphs if fold_of[_base(g["graph"])] != f]
        table = KernelTable.from_rows(train_rows, train_graphs)
        for n in names:
            if fold_of[_base(n)] == f:
                pred[n] = table.predict_us(emulated[n]) / 1e3
    p = np.array([pred[n] for n in names])
    m = np.array([totals_ms[f"{n}.onnx"] for n in names])
    return {**scores(p, m), "scheme": f"{folds}-fold over sweep graphs (all bit widths of a graph held out together)"}


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
    name = safe_name("--target", target if target.endswith("-kernels") else f"{target}-kernels")
    measured_here = csv_path is None
    with tempfile.TemporaryDirectory(prefix="lepton_kernels_") as tmp:
        if csv_path is None:
            if target not in HERE:
                raise ConfigError("--csv", None, f"{target} is not this machine: write the graphs with `lepton-search "
                                  f"calibrate --target {target} --kernels --write-graphs DIR`, run `lepton-search "
                                  "measure DIR --out m.csv --kernels` on the device, then pass --csv m.csv --graphs DIR")
            from lepton_search.latency.measure import measure_dir

            if graphs_dir is None:
                graphs_dir = Path(tmp) / "graphs"
                write_graphs(graphs_dir, n_graphs=n_graphs, seed=seed)
            csv_path = Path(tmp) / "measured.csv"
            measure_dir(graphs_dir, csv_path, runs=runs, kernels=True, rounds=rounds, verbose=verbose)
        elif graphs_dir is None:
            raise ConfigError("--graphs", None, "pass the folder of sweep graphs the CSV was measured on")
        from lepton_search.latency.measure import kernels_csv_path

        totals = read_measurements(csv_path)
        rows, graphs = ingest(graphs_dir, totals, read_kernel_csv(kernels_csv_path(csv_path)), verbose=verbose)
        heldout = crossval(graphs_dir, rows, graphs, totals)
        meta = {"target": name, "device": _device(Path(csv_path)), "date": dt.date.today().isoformat(),
                "measured_graphs": len(totals), "runs": runs if measured_here else None,
                "rounds": rounds if measured_here else None, "heldout": heldout}
    path = write_table(rows, graphs, _out_path(out, name), meta=meta)
    return BuiltTable(name, path, heldout, len(rows), len(graphs))
