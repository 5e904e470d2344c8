"""The kernels ONNX Runtime (CPU EP, 1 thread, all optimizations) runs for an ONNX graph, emulated.

Reads only the graph (`onnx` + numpy), never a runtime, so a kernel-table prediction works where
onnxruntime is absent. It mirrors what ORT 1.2x-1.3x does on x86 (checked against its
`optimized_model_filepath` output by `tests/latency/test_kernel_model.py`):

- constants: Cast/Identity of initializers are folded; DequantizeLinear of a constant is *not* folded
  (it runs every call) unless a fused integer kernel absorbs it;
- INT8 QDQ: DQ -> Conv/Gemm/MatMul/Add/GlobalAveragePool -> [Relu|Clip] -> Q becomes one integer kernel
  (QLinearConv in NHWC, QGemm, QLinearAdd, ...) when every activation input comes from DQ (MaxPool and
  reshapes pass DQ through), a Relu/Clip in between is covered by the Q range and the integer types agree
  (`kernels_qdq`: an int8 Q read by several nodes stays int8, which x86 integer convs refuse); the other
  Q/DQ nodes run, a shared DQ once per consumer, plus the int32 bias DQ ORT adds to an unfused conv;
- FP32 Conv with constant weights runs in NCHWc (channels padded to whole blocks) with Relu/Clip and
  a residual Add fused in, when its input channels are a multiple of 4 (under one block it reads NCHW);
  pools stay NCHWc only on whole blocks; ReorderInput/ReorderOutput at the edges, once per tensor (a
  tensor reordered to NCHW is still held in NCHWc); an NCHWc conv takes a residual Add only when the
  other input is held in NCHWc, else a plain conv feeding the Add takes it. The block is the CPU's
  (`cpu_identity.nchwc_block`): 16 with AVX-512F, 8 on other x86-64 (these rules hold at both, checked
  under `qemu-x86_64 -cpu EPYC-Rome` by `tests/latency/test_kernel_model.py`); 1 (no NCHWc) is assumed
  on Arm;
- Conv on run-time weights (INT4, unfused INT8) runs as NCHW FusedConv; NHWC integer regions get
  Transposes at their edges.

Example:
    >>> [k.cls for k in emulate("model.onnx")]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lepton_search.latency.cpu_identity import LEGACY_BLOCK, nchwc_block, this_cpu
from lepton_search.latency.kernels_qdq import ACTS, act_removable, attrs, bias_quantized, int8_fused
from lepton_search.latency.onnx_graph import DQ_TRANSPARENT, RESHAPES, GraphIndex, fix_batch

MAC_CLASSES = ("conv_nchwc", "dwconv_nchwc", "conv", "dwconv", "qconv", "qdwconv", "gemm", "qgemm")


@dataclass(frozen=True)
class Kernel:
    """One kernel ORT runs: its class and sizes (elements; MACs for conv/gemm; k = kernel height)."""

    cls: str
    macs: float
    in_elems: int
    out_elems: int
    w_elems: int = 0
    k: int = 1
    graph_w_bytes: int = 0  # weight bytes the whole graph reads per call: whether they stay in cache
    bits: int = 0  # integer width a DequantizeLinear reads (4-bit weights unpack slower than 8-bit activations)
    runtime_w: bool = False  # conv/gemm weights made each call (INT4 DequantizeLinear): not prepacked, cached
    names: tuple[str, ...] = ()  # the graph node (and output tensors) it runs: how a profiled kernel is paired
    block: int = LEGACY_BLOCK  # the NCHWc block of the CPU it runs on (`emulate` sets it): 16 on AVX-512

    @property
    def table_class(self) -> str:
        """The class the kernel table keeps apart: `dq4`, `dq8`, `dq32` for DQ by width, `conv_rtw` (and so
        on) for a conv/gemm on run-time weights (ORT cannot prepack them; they arrive hot in cache), else `cls`."""
        if self.cls == "dq" and self.bits:
            return f"{self.cls}{self.bits}"
        return f"{self.cls}_rtw" if self.runtime_w else self.cls

    def features(self) -> list[float]:
        """What the kernel table regresses on. MAC kernels: log sizes, the channel counts and spatial size
        they imply, how the channels fall on ORT's NCHWc blocks (`block`: 16 on AVX-512) and on 4 (a pruned
        conv with 18 channels runs another path than one with 16), and the graph's weight footprint (a GEMV
        whose weights fall out of cache is several times slower). Other kernels: log element counts and the
        footprint."""
        if self.cls in MAC_CLASSES:
            hw = self.macs / max(self.w_elems, 1)
            cout = self.out_elems / max(hw, 1)
            cin = self.w_elems / max(cout * self.k * self.k, 1)
            ci, co = round(cin), round(cout)
            return [*np.log2([self.macs + 1, self.in_elems + 1, self.out_elems + 1, self.w_elems + 1, cin + 1,
                              cout + 1, hw + 1, self.graph_w_bytes + 1]).tolist(),
                    self.k, ci % self.block, co % self.block, ci % 4, co % 4, self.w_elems * 4 / max(self.graph_w_bytes, 1)]
        return np.log2([self.in_elems + 1, self.out_elems + 1, self.graph_w_bytes + 1]).tolist()


def _pad(c: int, block: int) -> int:
    return -(-c // block) * block


@functools.cache
def host_block() -> int:
    """The NCHWc block ORT uses on this host (`nchwc_block` of its ISA flags)."""
    return nchwc_block(this_cpu().isa)


def emulate(model: str | Path | onnx.ModelProto, *, batch_size: int = 1, block: int | None = None) -> list[Kernel]:
    """The kernels ORT runs for `model`, in graph order (see the module docstring for the rules).

    `block`: the NCHWc block of the CPU ORT runs on (`cpu_identity.nchwc_block`; 1: no NCHWc kernels);
    None: this host's. Emulating for a device takes the device's block, never this host's."""
    block = host_block() if block is None else block
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    g = GraphIndex(fix_batch(model, batch_size))
    out: list[Kernel] = []
    skip: set[str] = set()  # outputs of nodes fused away
    layout: dict[str, str] = {i.name: "nchw" for i in g.g.input}  # nchw | nchwc | nhwc
    fusions = {n.output[0]: f for n in g.g.node
               if n.op_type in {"Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool"} and (f := int8_fused(g, n))}
    int8_outs = {o for f in fusions.values() for o in f}

    def absorbed(name: str) -> bool:
        """An activation DQ read only by integer kernels (through MaxPool / reshapes)."""
        cons = g.cons.get(name, [])
        return bool(cons) and name not in g.outputs and all(
            c.output[0] in int8_outs or (c.op_type in DQ_TRANSPARENT and absorbed(c.output[0])) for c in cons)

    avail: dict[str, set[str]] = {}  # the layouts a tensor is held in: ORT keeps the NCHWc original
    prev: onnx.NodeProto | None = None
    deferred: list[tuple[str, str]] = []  # residuals read by a fused conv before their producer runs

    def need(name: str, want: str) -> None:
        if name not in layout and name in g.prod:
            deferred.append((name, want))
            return
        have = layout.get(name, "nchw")
        seen = avail.setdefault(name, {have})
        if want in seen:
            layout[name] = want
            return
        if len(g.shapes.get(name, ())) != 4:
            return
        n = g.numel(name)
        if "nchwc" in (have, want):
            c = g.shapes[name][1]
            padded = n // c * _pad(c, block)
            out.append(Kernel("layout", 0.0, padded if have == "nchwc" else n, n if have == "nchwc" else padded))
        else:
            out.append(Kernel("layout", 0.0, n, n))
        seen.add(want)
        layout[name] = want

    def has(name: str, want: str) -> bool:
        return want in avail.get(name, {layout.get(name, "")})

    named = 0  # kernels before this index carry the names of the node that made them
    for node in g.g.node:
        named = _name_new(out, named, prev)
        prev = node
        op, y = node.op_type, node.output[0]
        if y in skip or op in {"Constant", "Identity", "Shape", "Gather", "ConstantOfShape"} or (
                op in {"Cast"} and g.const(node.input[0])):
            if y not in skip:
                layout[y] = layout.get(node.input[0], "nchw") if node.input else "nchw"
            continue
        x = node.input[0]
        lay = layout.get(x, "nchw")
        if op == "DequantizeLinear":
            if g.const(x) or absorbed(y):
                layout[y] = lay
                continue  # weights: costed by their consumer; activations: absorbed by integer kernels
            # ORT gives each consumer its own copy of a shared DQ (EnsureUniqueDQForNodeUnit)
            copies = sum(not (c.output[0] in int8_outs or (c.op_type in DQ_TRANSPARENT and absorbed(c.output[0])))
                         for c in g.cons.get(y, [])) + (y in g.outputs)
            out.extend([Kernel("dq", 0.0, g.numel(x), g.numel(y), bits=_bits(g, x))] * max(copies, 1))
            layout[y] = lay
            continue
        if op == "QuantizeLinear":
            out.append(Kernel("q", 0.0, g.numel(x), g.numel(y)))
            layout[y] = lay
            continue
        if op in RESHAPES:
            if g.from_dq(x) and absorbed(y):  # reshapes between integer kernels stay integer
                out.append(Kernel("reshape", 0.0, g.numel(x), g.numel(y)))
                layout[y] = lay
                continue
            need(x, "nchw")
            out.append(Kernel("reshape", 0.0, g.numel(x), g.numel(y)))
            layout[y] = "nchw"
            continue
        fused = fusions.get(y)
        if fused:
            skip.update(fused[1:])
            int8_outs.update(fused)
            final = fused[-1]
            _int8_kernel(g, node, final, out, need, layout)
            continue
        if op == "MaxPool" and g.from_dq(x) and (absorbed(y) or all(c.op_type == "QuantizeLinear" for c in g.cons[y])):
            need(x, "nhwc")
            out.append(Kernel("qpool", 0.0, g.numel(x), g.numel(y)))
            layout[y] = "nhwc"
            continue
        if op in {"Conv", "Gemm", "MatMul"}:
            _float_mac(g, node, out, need, layout, skip, has, block)
            continue
        if op in {"MaxPool", "AveragePool", "GlobalAveragePool"}:
            c = g.shapes.get(x, (0, 0))[1]
            stay = block > 1 and c % block == 0 and (lay == "nchwc" or op != "GlobalAveragePool")
            need(x, "nchwc" if stay else "nchw")
            out.append(Kernel("gap" if op == "GlobalAveragePool" else "pool", 0.0, g.numel(x), g.numel(y)))
            layout[y] = "nchwc" if stay else "nchw"
            continue
        if op in {"Add", "Mul", "Sub"}:
            lays = {layout.get(i, "nchw") for i in node.input if not g.const(i)}
            want = lays.pop() if len(lays) == 1 else "nchw"
            for i in node.input:
                if not g.const(i):
                    need(i, want)
            out.append(Kernel("add", 0.0, g.numel(x), g.numel(y)))
            layout[y] = want
            continue
        q = g.one_consumer(y)
        if not (op in ACTS and q is not None and q.op_type == "QuantizeLinear" and act_removable(g, node, q)):
            out.append(Kernel("eltwise", 0.0, g.numel(x), g.numel(y)))  # (a Relu/Clip the Q clips anyway is dropped)
        layout[y] = lay
    named = _name_new(out, named, prev)
    for name, want in deferred:
        need(name, want)
    for o in g.outputs:
        need(o, "nchw")
    # integer kernels read 1-byte weights; the others FP32 (FP16 is cast at load, INT4 dequantized per call)
    footprint = sum(k.w_elems * (1 if k.cls.startswith("q") else 4) for k in out if k.cls in MAC_CLASSES)
    return [dataclasses.replace(k, graph_w_bytes=footprint, block=block) for k in out]


def _name_new(out: list[Kernel], start: int, node: onnx.NodeProto | None) -> int:
    """Name the kernels from `start` on after `node` (its name and outputs; a fused kernel keeps the names
    it was given: ORT names an NCHWc conv after the last output it fuses). Returns the new start."""
    if node is not None:
        for i in range(start, len(out)):
            if not out[i].names:
                out[i] = dataclasses.replace(out[i], names=(node.name, *node.output))
    return len(out)


def _bits(g: GraphIndex, name: str) -> int:
    """Integer width of `name`, a DQ's input: its initializer's type, or the zero point of the Q writing it."""
    node = g.prod.get(name)
    if name not in g.inits and node is not None and node.op_type in {"Identity", "Cast"}:
        return _bits(g, node.input[0])
    if node is not None and node.op_type == "QuantizeLinear":
        if len(node.input) < 3 or not node.input[2]:
            return 8
        name = node.input[2]
    init = g.inits.get(name)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type) if init is not None else np.dtype(np.uint8)
    return 4 if "int4" in str(dtype) else dtype.itemsize * 8


def _conv_dims(g: GraphIndex, node: onnx.NodeProto, w_name: str) -> tuple[int, int, int, int, int]:
    """(cin, cout, kernel h, kernel w, group) of a Conv from its weight shape."""
    w = g.shapes.get(w_name) or g.shapes.get(g.prod[w_name].input[0]) if w_name in g.prod else g.shapes.get(w_name)
    group = int(attrs(node).get("group", 1))
    cout, cin_g, kh, kw = w if w and len(w) == 4 else (g.shapes[node.output[0]][1], 1, 1, 1)
    return cin_g * group, cout, kh, kw, group


def _mac_kernel(cls: str, cin: int, cout: int, kh: int, kw: int, group: int, out_hw: int, in_hw: int) -> Kernel:
    per_out = (cin // group) * kh * kw
    return Kernel(cls, float(cout * out_hw * per_out), cin * in_hw, cout * out_hw, cout * per_out, kh)


def _hw(g: GraphIndex, name: str) -> int:
    s = g.shapes.get(name, (1, 1))
    return int(np.prod(s[2:])) if len(s) > 2 else 1


def _gemm(g: GraphIndex, node: onnx.NodeProto, cls: str, y: str) -> Kernel:
    a = g.shapes.get(node.input[0], (1, 1))
    k = a[0] if node.op_type == "Gemm" and attrs(node).get("transA", 0) else a[-1]
    n_out = g.numel(y)
    return Kernel(cls, float(n_out * k), g.numel(node.input[0]), n_out, k * (g.shapes.get(y, (1, 1))[-1]))


def _float_mac(g: GraphIndex, node: onnx.NodeProto, out: list[Kernel], need, layout: dict, skip: set, has,
               block: int) -> None:
    x, y = node.input[0], node.output[0]
    w = node.input[1]
    final, residual = y, ""
    if g.const_dq(w):
        out.append(Kernel("dq", 0.0, g.numel(w), g.numel(w), bits=_bits(g, g.prod[w].input[0])))
    if bias_quantized(g, node):
        out.append(Kernel("dq", 0.0, g.numel(node.input[2]), g.numel(node.input[2]), bits=32))
    nxt = g.one_consumer(y)
    if node.op_type != "Conv":
        if nxt is not None and nxt.op_type in ACTS:
            skip.add(final := nxt.output[0])
        need(x, "nchw")
        out.append(dataclasses.replace(_gemm(g, node, "gemm", y), runtime_w=not g.const(w)))
        layout[final] = "nchw"
        return
    cin, cout, kh, kw, group = _conv_dims(g, node, w)
    dw = group > 1 and group == cin
    # ORT: under one block of input channels the NCHWc conv reads NCHW; otherwise (and for depthwise) the
    # channel count must be a multiple of 4, else the conv stays a plain NCHW FusedConv
    small_in = group == 1 and cin < block
    nchwc = block > 1 and g.const(w) and (group == 1 or dw) and (small_in or cin % 4 == 0)
    if nxt is not None and nxt.op_type == "Add" and nxt.output[0] not in skip:
        # Conv + residual Add (+ Relu/Clip) run as one kernel; an NCHWc conv takes the Add only when the
        # other input is already held in NCHWc (else a plain conv feeding the Add takes it, or it runs alone)
        other = next((i for i in nxt.input if i != y), "")
        if not nchwc or g.const(other) or has(other, "nchwc"):
            residual = other
            skip.add(final := nxt.output[0])
            nxt = g.one_consumer(final)
    if nxt is not None and nxt.op_type in ACTS:
        skip.add(final := nxt.output[0])
    if not nchwc:
        return _plain_conv(g, node, out, need, layout, final, residual, (cin, cout, kh, kw, group))
    need(x, "nchw" if small_in else "nchwc")
    ci = cin if small_in else _pad(cin, block)
    if residual and not g.const(residual):
        need(residual, "nchwc")
    kernel = _mac_kernel("dwconv_nchwc" if dw else "conv_nchwc", _pad(cin, block) if dw else ci, _pad(cout, block),
                         kh, kw, _pad(cin, block) if dw else 1, _hw(g, y), _hw(g, x))
    out.append(dataclasses.replace(kernel, names=(node.name, y, final)))
    layout[final] = "nchwc"


def _plain_conv(g: GraphIndex, node: onnx.NodeProto, out: list[Kernel], need, layout: dict, final: str,
                residual: str, dims: tuple[int, int, int, int, int]) -> None:
    """NCHW Conv / FusedConv (im2col + GEMM, or the depthwise kernel)."""
    x, y = node.input[0], node.output[0]
    cin, cout, kh, kw, group = dims
    dw = group > 1 and group == cin
    need(x, "nchw")
    if residual and not g.const(residual):
        need(residual, "nchw")
    kernel = _mac_kernel("dwconv" if dw else "conv", cin, cout, kh, kw, group, _hw(g, y), _hw(g, x))
    out.append(dataclasses.replace(kernel, runtime_w=not g.const(node.input[1])))
    layout[final] = "nchw"


def _int8_kernel(g: GraphIndex, node: onnx.NodeProto, final: str, out: list[Kernel], need, layout: dict) -> None:
    op, x, y = node.op_type, node.input[0], node.output[0]
    if op == "Conv":
        w = g.prod[node.input[1]].input[0]
        cin, cout, kh, kw, group = _conv_dims(g, node, w)
        need(x, "nhwc")
        dw = group > 1 and group == cin
        out.append(_mac_kernel("qdwconv" if dw else "qconv", cin, cout, kh, kw, group, _hw(g, y), _hw(g, x)))
        layout[final] = "nhwc"
    elif op in {"Gemm", "MatMul"}:
        need(x, "nchw")
        out.append(_gemm(g, node, "qgemm", y))
        layout[final] = "nchw"
    elif op == "Add":
        lays = {layout.get(i, "nchw") for i in node.input}
        want = lays.pop() if len(lays) == 1 else "nhwc"
        for i in node.input:
            need(i, want)
        out.append(Kernel("qadd", 0.0, g.numel(x), g.numel(y)))
        layout[final] = want
    else:  # GlobalAveragePool
        out.append(Kernel("qgap", 0.0, g.numel(x), g.numel(y)))
        layout[final] = layout.get(x, "nchw")
