"""Per-kernel times of one ONNX file from ONNX Runtime's profiler, each kernel named by its class.

Runs on the device being calibrated (`lepton-search measure DIR --out CSV --kernels`), so it needs
only onnxruntime, numpy and the standard library: the class comes from what the profiler reports
(op name, node name, input shapes), never from reading the graph with `onnx`. The classes are those
`kernels.emulate` predicts; `OP_CLASS` is the one ORT op -> class table (`node_class` reads a node of
ORT's optimized graph with it, which is what tests check the emulation against).

Example:
    >>> times = profile_kernels("g000-b32.onnx", (1, 3, 16, 16))  # doctest: +SKIP
    >>> times[0].cls, times[0].us  # doctest: +SKIP
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KERNEL_COLUMNS = ("file", "node", "op", "cls", "us", "in_elems", "w_elems", "out_elems")
OP_CLASS = {"Gemm": "gemm", "FusedGemm": "gemm", "MatMul": "gemm", "QGemm": "qgemm", "QLinearMatMul": "qgemm",
          "MatMulIntegerToFloat": "qgemm", "DequantizeLinear": "dq", "QuantizeLinear": "q", "Transpose": "layout",
          "ReorderInput": "layout", "ReorderOutput": "layout", "MaxPool": "pool", "AveragePool": "pool",
          "NhwcMaxPool": "qpool", "GlobalAveragePool": "gap", "QLinearGlobalAveragePool": "qgap", "Add": "add",
          "Sum": "add", "QLinearAdd": "qadd", "Flatten": "reshape", "Reshape": "reshape"}


@dataclass(frozen=True)
class KernelTime:
    """One kernel ORT ran: node name, op name, kernel class, its time in microseconds, and the elements of
    its first two inputs and first output (what `kernel_sweep.pair` matches on: ORT may run branches in
    another order than the graph lists them)."""

    node: str
    op: str
    cls: str
    us: float
    in_elems: int = 0
    w_elems: int = 0
    out_elems: int = 0


def kernel_class(op: str, *, depthwise: bool = False, nchwc: bool = False) -> str:
    """The kernel class of an ORT op (a conv's also by whether it is depthwise and runs in NCHWc)."""
    if op == "QLinearConv":
        return "qdwconv" if depthwise else "qconv"
    if op in ("Conv", "FusedConv"):
        base = "dwconv" if depthwise else "conv"
        return base + "_nchwc" if nchwc else base
    return OP_CLASS.get(op, "eltwise")


def event_class(op: str, node: str, input_shapes: list[list[int]]) -> str:
    """Kernel class of a profiler event: NCHWc convs are named `*_nchwc*` by ORT's NCHWc transformer;
    a conv is depthwise when its weight has one input channel per group and the input has several."""
    w_at = 3 if op == "QLinearConv" else 1
    x = input_shapes[0] if input_shapes else []
    w = input_shapes[w_at] if len(input_shapes) > w_at else []
    dw = len(w) == 4 and w[1] == 1 and len(x) == 4 and x[1] > 1
    return kernel_class(op, depthwise=dw, nchwc="nchwc" in node)


def node_class(node: Any) -> str:
    """Kernel class of a node (an `onnx.NodeProto`) of ORT's optimized graph (`optimized_model_filepath`):
    grouped convs count as depthwise, NCHWc convs carry the `com.microsoft.nchwc` domain."""
    grouped = any(a.name == "group" and a.i > 1 for a in node.attribute)
    return kernel_class(node.op_type, depthwise=grouped, nchwc="nchwc" in node.domain)


def _shapes(args: dict, key: str = "input_type_shape") -> list[list[int]]:
    return [next(iter(s.values()), []) if isinstance(s, dict) else [] for s in args.get(key, [])]


def _numel(shapes: list[list[int]], i: int = 0) -> int:
    return int(np.prod(shapes[i])) if len(shapes) > i and shapes[i] else 0


def profile_kernels(path: str | Path, shape: tuple[int, ...], *, runs: int = 40, warmup: int = 10,
                    threads: int = 1, feed: Mapping[str, np.ndarray] | None = None) -> list[KernelTime]:
    """Time of every kernel (trimmed mean) over `runs` profiled calls after `warmup`, in execution order.

    Fed `feed` (input name -> array) when given, else N(0, 1) floats of `shape` for the first input."""
    import onnxruntime as ort

    from lepton_search.latency.host_cpu import host_lock

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        if feed is None:
            feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        with host_lock():
            for _ in range(warmup + runs):
                sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    durs: dict[str, list[float]] = {}
    info: dict[str, tuple[str, str, tuple[int, int, int]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            args = e.get("args", {})
            if node not in info:
                op = str(args.get("op_name", ""))
                ins = _shapes(args)
                w_at = 3 if op in ("QLinearConv", "QGemm", "QLinearMatMul") else 1  # (prepacked: absent)
                sizes = (_numel(ins), _numel(ins, w_at), _numel(_shapes(args, "output_type_shape")))
                info[node] = (op, event_class(op, node, ins), sizes)
            durs.setdefault(node, []).append(float(e["dur"]))
    return [KernelTime(n, op, cls, trimmed_mean(durs[n][warmup:] or durs[n]), *sizes)
            for n, (op, cls, sizes) in info.items()]


def trimmed_mean(values: list[float], cut: float = 0.2) -> float:
    """Mean of the middle values (a `cut` share dropped at each end). The profiler reports whole
    microseconds, so a median of a 1.4 us kernel says 1; the mean of the jittered values resolves it."""
    v = np.sort(np.asarray(values, dtype=float))
    k = int(len(v) * cut)
    return float(v[k: len(v) - k].mean()) if len(v) > 2 * k else float(np.median(v))
