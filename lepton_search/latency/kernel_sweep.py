"""Kernel calibration: time the kernels ONNX Runtime runs in small synthetic graphs; write a kernel table.

The graphs are random chains (conv / depthwise / pool / residual blocks, or MLPs) built here with
`onnx.helper`, never the architectures a model is scored on, in FP32, FP16-weight, INT8 (NNCF QDQ)
and INT4-weight forms (`write_graphs`). Each is timed by `measure.measure_dir(kernels=True)`, here or
on a device: whole-call time, and ORT's profiler for per-kernel times (the median over `runs`).
`ingest` pairs each profiled kernel with the kernel `kernels.emulate` predicts for that graph (same
class, same order), so a table row has exactly the features the predictor computes. Imports
onnxruntime (and nncf for INT8) lazily.

Example:
    >>> rows, graphs = sweep(n_graphs=8, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lepton_search.errors import ConfigError
from lepton_search.latency.kernels import Kernel, emulate

COLUMNS = ("graph", "cls", "macs", "in_elems", "out_elems", "w_elems", "k", "us")
GRAPH_COLUMNS = ("graph", "bits", "n_kernels", "kernel_sum_us", "total_us")
SWEEP_META = "sweep.json"
CHANNELS = (4, 6, 8, 12, 16, 20, 24, 30, 32, 40, 48, 60, 64, 80, 96, 120, 128, 160)


def _ort_class(node: onnx.NodeProto) -> str:
    """The kernel class (see `kernels.MAC_CLASSES`/`ELEM_CLASSES`) of a node of ORT's optimized graph."""
    op = node.op_type
    grp = any(a.name == "group" and a.i > 1 for a in node.attribute)
    table = {"Gemm": "gemm", "FusedGemm": "gemm", "MatMul": "gemm", "QGemm": "qgemm", "QLinearMatMul": "qgemm",
             "DequantizeLinear": "dq", "QuantizeLinear": "q", "Transpose": "layout", "ReorderInput": "layout",
             "ReorderOutput": "layout", "MaxPool": "pool", "AveragePool": "pool", "NhwcMaxPool": "qpool",
             "GlobalAveragePool": "gap", "QLinearGlobalAveragePool": "qgap", "Add": "add", "Sum": "add",
             "QLinearAdd": "qadd", "Flatten": "reshape", "Reshape": "reshape"}
    if op in ("Conv", "FusedConv"):
        base = "dwconv" if grp else "conv"
        return base + "_nchwc" if "nchwc" in node.domain else base
    if op == "QLinearConv":
        return "qdwconv" if grp else "qconv"
    return table.get(op, "eltwise")


def random_graph(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A random small CNN or MLP (FP32) and its input shape."""
    if rng.random() < 0.3:
        widths = [int(rng.choice([64, 128, 196, 256, 384, 512, 784, 1024]))]
        widths += [int(rng.choice([16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]))
                   for _ in range(rng.integers(1, 4))] + [10]
        nodes, inits, prev = [], [], "input"
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            inits += [numpy_helper.from_array(rng.standard_normal((b, a)).astype(np.float32) * 0.05, f"w{i}"),
                      numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], transB=1))
            prev = f"g{i}"
            if i < len(widths) - 2:
                nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
                prev = f"r{i}"
        return _model(nodes, inits, prev, [1, widths[0]]), (1, widths[0])
    return _random_cnn(rng)


def _random_cnn(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    size = int(rng.choice([8, 12, 16, 24, 28, 32]))
    cin = int(rng.choice([1, 3]))
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev, c, hw = "input", cin, size
    relu6 = rng.random() < 0.4

    def conv(x: str, ci: int, co: int, k: int, stride: int, group: int, act: bool) -> str:
        name = f"n{len(nodes)}"
        w = rng.standard_normal((co, ci // group, k, k)).astype(np.float32) * (2.0 / (ci // group * k * k)) ** 0.5
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(co, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[k // 2] * 4,
                                      strides=[stride, stride], group=group))
        if not act:
            return name
        if relu6:
            lo, hi = f"{name}_lo", f"{name}_hi"
            inits.extend([numpy_helper.from_array(np.array(0, np.float32), lo),
                          numpy_helper.from_array(np.array(6, np.float32), hi)])
            nodes.append(helper.make_node("Clip", [name, lo, hi], [f"{name}_a"]))
        else:
            nodes.append(helper.make_node("Relu", [name], [f"{name}_a"]))
        return f"{name}_a"

    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(["conv", "conv", "dw", "res", "pool"]) if c > 3 else "conv"
        co = int(rng.choice(CHANNELS))
        stride = 2 if hw >= 8 and rng.random() < 0.3 else 1
        if kind == "conv":
            prev = conv(prev, c, co, int(rng.choice([1, 3, 3, 5])), stride, 1, True)
            c, hw = co, -(-hw // stride)
        elif kind == "dw":
            prev = conv(prev, c, c, 3, stride, c, True)
            hw = -(-hw // stride)
            prev = conv(prev, c, co, 1, 1, 1, False)
            c = co
        elif kind == "res":
            body = conv(conv(prev, c, c, 3, 1, 1, True), c, c, 3, 1, 1, False)
            nodes.append(helper.make_node("Add", [body, prev], [f"n{len(nodes)}"]))
            nodes.append(helper.make_node("Relu", [nodes[-1].output[0]], [f"n{len(nodes)}"]))
            prev = nodes[-1].output[0]
        elif hw >= 4:
            nodes.append(helper.make_node("MaxPool", [prev], [f"n{len(nodes)}"], kernel_shape=[2, 2], strides=[2, 2]))
            prev, hw = nodes[-1].output[0], hw // 2
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits += [numpy_helper.from_array(rng.standard_normal((10, c)).astype(np.float32), "head_w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "head_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], transB=1))
    return _model(nodes, inits, "logits", [1, cin, size, size]), (1, cin, size, size)


def _model(nodes: list, inits: list, out: str, shape: list[int]) -> onnx.ModelProto:
    for i, node in enumerate(nodes):
        node.name = node.name or f"{node.op_type}_{i}"  # the profiler names kernels by node name
    graph = helper.make_graph(nodes, "sweep", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def precision_forms(model: onnx.ModelProto, shape: tuple[int, ...], bits: int, seed: int) -> onnx.ModelProto:
    """The model in the form `lepton_search.compress.quantize` gives it for `bits`."""
    from lepton_search.compress import quantize

    calib = [np.random.default_rng(seed + i).standard_normal(shape).astype(np.float32) for i in range(2)]
    return quantize.quantize(model, bits, calib if bits == 8 else ())


def pair(emulated: list[Kernel], measured: list[tuple[str, float]]) -> tuple[list[tuple[Kernel, float]], bool]:
    """Emulated kernels matched to profiled ones class by class, in order; and whether all counts agree.

    Where ORT ran a different number of kernels of a class than emulated, that class is left out."""
    by_cls: dict[str, list[float]] = {}
    for cls, us in measured:
        by_cls.setdefault(cls, []).append(us)
    want: dict[str, int] = {}
    for k in emulated:
        want[k.cls] = want.get(k.cls, 0) + 1
    exact = {c: len(v) for c, v in by_cls.items()} == want
    seen: dict[str, int] = {}
    out = []
    for k in emulated:
        if len(by_cls.get(k.cls, [])) != want[k.cls]:
            continue
        i = seen.get(k.cls, 0)
        seen[k.cls] = i + 1
        out.append((k, by_cls[k.cls][i]))
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


def read_kernel_csv(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """file -> [(kernel class, us)] in execution order, from a `measure --kernels` kernels CSV."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--csv", str(path), "no per-kernel CSV beside it; run `lepton-search measure DIR --out CSV "
                          "--kernels` on the device (it writes CSV and <CSV stem>.kernels.csv)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"file", "cls", "us"} <= set(rows[0]):
        raise ConfigError("--csv", str(path), "needs columns file, cls, us (as `lepton-search measure --kernels` writes)")
    out: dict[str, list[tuple[str, float]]] = {}
    for r in rows:
        out.setdefault(r["file"], []).append((r["cls"], float(r["us"])))
    return out


def ingest(graphs_dir: str | Path, totals_ms: dict[str, float], kernels: dict[str, list[tuple[str, float]]], *,
           verbose: bool = False) -> tuple[list[dict], list[dict]]:
    """Kernel rows and per-graph rows from measured whole-call times and profiled kernels of `graphs_dir`."""
    graphs_dir = Path(graphs_dir)
    rows: list[dict] = []
    graphs: list[dict] = []
    for file in sorted(totals_ms):
        path = graphs_dir / file
        if not path.is_file():
            raise ConfigError("--graphs", str(graphs_dir), f"does not hold {file!r} named in the measurements")
        paired, exact = pair(emulate(path), kernels.get(file, []))
        name = Path(file).stem
        total_us = totals_ms[file] * 1e3
        if verbose:
            print(f"{name} {total_us:9.1f} us  {len(paired)} kernels {'' if exact else '(partial)'}")
        for k, us in paired:
            rows.append({"graph": name, "cls": k.cls, "macs": k.macs, "in_elems": k.in_elems,
                         "out_elems": k.out_elems, "w_elems": k.w_elems, "k": k.k, "us": us})
        if exact:  # the per-call overhead is fitted on graphs whose every kernel is known
            bits = int(name.rsplit("-b", 1)[1]) if "-b" in name else 32
            graphs.append({"graph": name, "bits": bits, "n_kernels": len(paired),
                           "kernel_sum_us": sum(us for _, us in paired), "total_us": total_us})
    return rows, graphs


def sweep(*, n_graphs: int = 60, bits: tuple[int, ...] = (32, 16, 8, 4), seed: int = 0, runs: int = 60,
          verbose: bool = False) -> tuple[list[dict], list[dict]]:
    """Write, time (`measure_dir(kernels=True)`) and ingest `n_graphs` random graphs in each of `bits`."""
    from lepton_search.latency.calibrate import read_measurements
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
