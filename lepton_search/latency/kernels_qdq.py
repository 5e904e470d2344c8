"""ORT's QDQ rules for the kernel emulation (`kernels.py`): which Q/DQ groups become integer kernels.

What ONNX Runtime (CPU EP, x86) does to a QDQ graph before it runs it, read from the graph alone:
a Relu/Clip the following Q clips anyway is dropped; an int8 Q -> DQ pair feeding one node becomes
uint8 (QDQS8ToU8) and a DQ with several consumers is copied once per consumer; a Conv/Gemm between a
per-tensor DQ and a Q gets its bias quantized to int32 + DQ; a DQ -> op -> Q group becomes one integer
kernel only when its inputs and output share one integer type (uint8 only, for conv and matmul, on x86).
"""

from __future__ import annotations

import numpy as np
import onnx

from lepton_search.latency.onnx_graph import GraphIndex

ACTS = {"Relu", "Clip"}


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def act_removable(g: GraphIndex, act: onnx.NodeProto, q: onnx.NodeProto) -> bool:
    """ORT drops Relu/Clip before QuantizeLinear when the Q range lies inside the clip range."""
    scale = g.value(q.input[1])
    zp = g.value(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None or scale.size != 1:
        return False
    info = np.iinfo(zp.dtype)
    lower = float(scale) * (info.min - int(zp))
    upper = float(scale) * (info.max - int(zp))
    lo, hi = 0.0, float("inf")
    if act.op_type == "Clip":
        a = attrs(act)
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        if len(act.input) > 1 and act.input[1]:
            v = g.value(act.input[1])
            lo = -np.inf if v is None else float(v)
        if len(act.input) > 2 and act.input[2]:
            v = g.value(act.input[2])
            hi = np.inf if v is None else float(v)
    eps = float(np.finfo(np.float32).eps)
    return lo - lower <= eps and upper - hi <= eps


def _dq_of(g: GraphIndex, name: str) -> onnx.NodeProto:
    node = g.prod[name]
    while node.op_type != "DequantizeLinear":
        node = g.prod[node.input[0]]
    return node


def _scalar_q(g: GraphIndex, node: onnx.NodeProto) -> bool:
    """Integer kernels take per-tensor activation scales only (per-channel Q/DQ stays unfused)."""
    scale = g.value(node.input[1])
    return scale is not None and scale.size == 1


def _q_dtype(g: GraphIndex, node: onnx.NodeProto) -> np.dtype:
    """The integer type a Q (or the DQ reading it) carries once ORT has run: its zero point's type, except
    that an int8 Q -> DQ pair feeding exactly one node becomes uint8 (ORT's QDQS8ToU8 on x86; a DQ with
    several consumers is first duplicated, one per consumer, which leaves the Q with several DQs)."""
    if node.op_type == "DequantizeLinear" and node.input[0] in g.prod and g.op(node.input[0]) == "QuantizeLinear":
        return _q_dtype(g, g.prod[node.input[0]])
    zp = g.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    dtype = np.dtype(np.uint8) if zp is None else zp.dtype
    if dtype != np.int8 or node.op_type != "QuantizeLinear":
        return dtype
    dq = g.one_consumer(node.output[0])
    if dq is not None and dq.op_type == "DequantizeLinear" and g.one_consumer(dq.output[0]) is not None:
        return np.dtype(np.uint8)
    return dtype


def bias_quantized(g: GraphIndex, node: onnx.NodeProto) -> bool:
    """ORT (WeightBiasQuantization) turns the float bias of a Conv/Gemm read through a per-tensor DQ and
    written, through Relu/Clip only, to a Q into int32 + DQ; left unfused, that DQ runs every call."""
    if node.op_type not in {"Conv", "Gemm"} or len(node.input) < 3 or not node.input[2] or not g.const(node.input[2]):
        return False
    dq, w = g.prod.get(node.input[0]), g.prod.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or not _scalar_q(g, dq) or len(g.shapes.get(node.input[2], ())) != 1:
        return False
    nxt = g.one_consumer(node.output[0])
    while nxt is not None and nxt.op_type in ACTS:
        nxt = g.one_consumer(nxt.output[0])
    if nxt is None or nxt.op_type != "QuantizeLinear" or w is None or w.op_type != "DequantizeLinear":
        return False
    scale = g.value(w.input[1])
    if scale is None or scale.size == 1:
        return scale is not None
    axis = int(attrs(w).get("axis", 1))
    want = 0 if node.op_type == "Conv" else 1 - int(attrs(node).get("transB", 0))
    return scale.ndim == 1 and scale.size == g.numel(node.input[2]) and axis == want


def int8_fused(g: GraphIndex, node: onnx.NodeProto) -> list[str]:
    """Names of the nodes absorbed when `node` runs as an integer kernel, else []."""
    acts = [i for i in node.input if i and not g.const(i) and not g.const_dq(i)]
    if not acts or not all(g.from_dq(i) and _scalar_q(g, _dq_of(g, i)) for i in acts):
        return []
    types = {_q_dtype(g, _dq_of(g, i)) for i in acts}
    weights = [i for i in node.input[1:2] if node.op_type in {"Conv", "Gemm", "MatMul"}]
    if weights and not g.const_dq(weights[0]):
        return []
    nxt = g.one_consumer(node.output[0])
    absorbed = [node.output[0]]
    if nxt is not None and nxt.op_type in ACTS:
        q = g.one_consumer(nxt.output[0])
        if q is None or q.op_type != "QuantizeLinear" or not act_removable(g, nxt, q):
            return []
        absorbed.append(nxt.output[0])
        nxt = q
    if nxt is None or nxt.op_type != "QuantizeLinear" or not _scalar_q(g, nxt):
        return []
    # inputs and output in one integer type; on x86 MAC kernels take uint8 activations only
    types.add(_q_dtype(g, nxt))
    if len(types) > 1 or (node.op_type in {"Conv", "Gemm", "MatMul"} and np.dtype(np.int8) in types):
        return []
    return [*absorbed, nxt.output[0]]
