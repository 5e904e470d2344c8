"""Kernel calibration: time the kernels ONNX Runtime runs in small synthetic graphs; write a kernel table.

The graphs are random chains (conv / depthwise / pool / residual blocks, or MLPs) built here with
`onnx.helper`, never the architectures a model is scored on, in FP32, FP16-weight, INT8 (NNCF QDQ)
and INT4-weight forms (`write_graphs`). Each is timed by `measure.measure_dir(kernels=True)`, here or
on a device: whole-call time, and ORT's profiler for per-kernel times (the median over `runs`).
`ingest` pairs each profiled kernel with the kernel `kernels.emulate` predicts for that graph on the
measured CPU (its NCHWc block; same class, same order), so a table row has exactly the features the
predictor computes. Imports
onnxruntime (and nncf for INT8) lazily.

Example:
    >>> rows, graphs = sweep(n_graphs=8, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx

from lepton_search.calibration.kernel_graphs import random_graph
from lepton_search.errors import ConfigError
from lepton_search.latency.kernels import Kernel, emulate

COLUMNS = ("graph", "cls", "macs", "in_elems", "out_elems", "w_elems", "k", "graph_w_bytes", "bits", "runtime_w", "us")
GRAPH_COLUMNS = ("graph", "bits", "n_kernels", "kernel_sum_us", "total_us")
SWEEP_META = "sweep.json"


def precision_forms(model: onnx.ModelProto, shape: tuple[int, ...], bits: int, seed: int) -> onnx.ModelProto:
    """The model in the form `lepton_search.techniques.quantize` gives it for `bits`."""
    from lepton_search.techniques import quantize

    calib = [np.random.default_rng(seed + i).standard_normal(shape).astype(np.float32) for i in range(2)]
    return quantize.quantize(model, bits, calib if bits == 8 else ())


Measured = tuple  # (class, us[, (in, weight, out) elements or None[, profiled node name]])


def _profiled_names(node: str) -> set[str]:
    """The graph names a profiled kernel may carry: ORT appends `_token_N` to nodes it rewrote and names
    an NCHWc conv `<fused output>_nchwc`."""
    base = re.sub(r"(_token_\d+)+$", "", node)
    return {node, base, base.removesuffix("_nchwc")} - {""}


def _mismatch(k: Kernel, sizes: tuple[int, int, int] | None, node: str) -> tuple[int, float]:
    """How unlike a profiled kernel is an emulated one: (0 if the profiled node name is one of the kernel's
    names else 1, sum of |log ratio| over the input, weight and output elements both know)."""
    named = 0 if node and k.names and _profiled_names(node) & set(k.names) else 1
    if sizes is None:
        return named, 0.0
    want = (k.in_elems, k.w_elems, k.out_elems)
    return named, round(float(sum(abs(np.log((a + 1) / (b + 1))) for a, b in zip(want, sizes) if a and b)), 6)


def pair(emulated: list[Kernel], measured: list[Measured]) -> tuple[list[tuple[Kernel, float]], bool]:
    """Emulated kernels matched to profiled ones class by class; and whether all counts agree.

    Within a class each emulated kernel (in graph order) takes the unused profiled kernel of the same
    node name, else the one whose sizes are closest, the earliest on a tie: ORT may run parallel branches
    (a shortcut conv, say) in another order than the graph lists them. Where ORT ran a different number
    of kernels of a class than emulated, that class is left out."""
    by_cls: dict[str, list[tuple[float, tuple[int, int, int] | None, str]]] = {}
    for cls, us, *rest in measured:
        by_cls.setdefault(cls, []).append((us, rest[0] if rest else None, rest[1] if len(rest) > 1 else ""))
    want: dict[str, int] = {}
    for k in emulated:
        want[k.cls] = want.get(k.cls, 0) + 1
    exact = {c: len(v) for c, v in by_cls.items()} == want
    used: dict[str, set[int]] = {c: set() for c in by_cls}
    out = []
    for k in emulated:
        cands = by_cls.get(k.cls, [])
        if len(cands) != want[k.cls]:
            continue
        free = [i for i in range(len(cands)) if i not in used[k.cls]]
        best = min(free, key=lambda i: (*_mismatch(k, cands[i][1], cands[i][2]), i))
        used[k.cls].add(best)
        out.append((k, cands[best][0]))
    return out, exact


def write_graphs(folder: str | Path, *, n_graphs: int = 60, bits: tuple[int, ...] = (32, 16, 8, 4),
                 seed: int = 0) -> list[Path]:
    """Write `n_graphs` random graphs in each of `bits` as `gNNN-bB.onnx` (to time here or on a device)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for gi in range(n_graphs):
        base, shape = random_graph(rng)
        for b in bits:
            path = folder / f"g{gi:03d}-b{b}.onnx"
            onnx.save(precision_forms(base, shape, b, seed + gi), str(path))
            paths.append(path)
    (folder / SWEEP_META).write_text(json.dumps({"n_graphs": n_graphs, "bits": list(bits), "seed": seed}))
    return paths


def read_kernel_csv(path: str | Path) -> dict[str, list[Measured]]:
    """file -> [(kernel class, us, sizes)] in execution order, from a `measure --kernels` kernels CSV
    (sizes: input, weight and output elements; None in a CSV written before they were recorded)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("csv_path", str(path), "no per-kernel CSV beside it; run `lepton-search measure DIR --out CSV "
                          "--kernels` on the device (it writes CSV and <CSV stem>.kernels.csv)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"file", "cls", "us"} <= set(rows[0]):
        raise ConfigError("csv_path", str(path), "needs columns file, cls, us (as `lepton-search measure --kernels` writes)")
    out: dict[str, list[Measured]] = {}
    for r in rows:
        sizes = (tuple(int(float(r[c] or 0)) for c in ("in_elems", "w_elems", "out_elems"))
                 if r.get("out_elems") not in (None, "") else None)
        out.setdefault(r["file"], []).append((r["cls"], float(r["us"]), sizes, r.get("node") or ""))
    return out


def ingest(graphs_dir: str | Path, totals_ms: dict[str, float], kernels: dict[str, list[tuple[str, float]]], *,
           block: int | None = None, verbose: bool = False) -> tuple[list[dict], list[dict]]:
    """Kernel rows and per-graph rows from measured whole-call times and profiled kernels of `graphs_dir`;
    `block`: the NCHWc block of the CPU they were measured on (`cpu_identity.recorded_block`), None: this host's."""
    graphs_dir = Path(graphs_dir)
    rows: list[dict] = []
    graphs: list[dict] = []
    for file in sorted(totals_ms):
        path = graphs_dir / file
        if not path.is_file():
            raise ConfigError("graphs_dir", str(graphs_dir), f"does not hold {file!r} named in the measurements")
        paired, exact = pair(emulate(path, block=block), kernels.get(file, []))
        name = Path(file).stem
        total_us = totals_ms[file] * 1e3
        if verbose:
            print(f"{name} {total_us:9.1f} us  {len(paired)} kernels {'' if exact else '(partial)'}")
        for k, us in paired:
            rows.append({"graph": name, "cls": k.cls, "macs": k.macs, "in_elems": k.in_elems,
                         "out_elems": k.out_elems, "w_elems": k.w_elems, "k": k.k,
                         "graph_w_bytes": k.graph_w_bytes, "bits": k.bits, "runtime_w": int(k.runtime_w), "us": us})
        if exact:  # the per-call overhead is fitted on graphs whose every kernel is known
            bits = int(name.rsplit("-b", 1)[1]) if "-b" in name else 32
            graphs.append({"graph": name, "bits": bits, "n_kernels": len(paired),
                           "kernel_sum_us": sum(us for _, us in paired), "total_us": total_us})
    return rows, graphs


def sweep(*, n_graphs: int = 60, bits: tuple[int, ...] = (32, 16, 8, 4), seed: int = 0, runs: int = 60,
          verbose: bool = False) -> tuple[list[dict], list[dict]]:
    """Write, time (`measure_dir(kernels=True)`) and ingest `n_graphs` random graphs in each of `bits`."""
    from lepton_search.calibration.profile_fit import read_measurements
    from lepton_search.latency.measure import kernels_csv_path, measure_dir

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "graphs"
        write_graphs(folder, n_graphs=n_graphs, bits=bits, seed=seed)
        out = Path(tmp) / "measured.csv"
        measure_dir(folder, out, runs=runs, kernels=True, verbose=verbose)
        return ingest(folder, read_measurements(out), read_kernel_csv(kernels_csv_path(out)), verbose=verbose)


def write_table(rows: list[dict], graphs: list[dict], path: str | Path, *, meta: dict | None = None) -> Path:
    """Kernel rows to `path` (CSV); per-graph rows to `<path stem>.graphs.csv`; `meta` to `.json`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, cols, data in ((path, COLUMNS, rows), (path.with_suffix(".graphs.csv"), GRAPH_COLUMNS, graphs)):
        with open(target, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(cols))
            writer.writeheader()
            writer.writerows(data)
    path.with_suffix(".json").write_text(json.dumps({**(meta or {}), "kernels": len(rows), "graphs": len(graphs),
                                                     "pid": os.getpid()}, indent=2))
    return path
