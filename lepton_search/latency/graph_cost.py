"""Per-node cost of an ONNX graph: MACs, bytes moved, op class, precision, weight sparsity.

Reads only the graph (the `onnx` package and numpy), never a runtime. Shapes come from
`onnx.shape_inference` with the batch dimension fixed. Nodes every inference runtime removes or fuses
(identity-like reshapes, weight casts/dequantizations of constants, an activation right after a
conv/gemm, Q/DQ pairs between two quantized ops) cost nothing of their own.

Example:
    >>> costs = analyze("model.onnx", batch_size=1)  # doctest: +SKIP
    >>> sum(c.macs for c in costs)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from lepton_search.latency.onnx_graph import GraphIndex, fix_batch

FREE_OPS = {"Identity", "Constant", "Shape", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Dropout", "Gather",
            "ConstantOfShape", "Concat_shape"}
FUSED_ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh", "HardSwish"}
MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
           "MatMulInteger", "MatMulNBits"}
QUANTIZED_IO = MAC_OPS | {"Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Relu", "Clip"}
INT8_TYPES = {TensorProto.INT8, TensorProto.UINT8}
INT4_TYPES = {TensorProto.INT4, TensorProto.UINT4}
BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int8w": 1.0, "int4": 0.5}
TABLE_GATHERS = {"Gather", "GatherBlockQuantized"}  # an embedding lookup when it reads a constant 2-D table


@dataclass(frozen=True)
class NodeCost:
    """What one node costs, before a device profile turns it into time.

    `op_class` is conv, dwconv, gemm or other; `precision` is fp32, fp16, int8 (weights and
    activations, an integer kernel), int8w (INT8 weights of an op left in FP32) or int4 (weights).
    `weight_elems` counts the weights a runtime must
    dequantize when it cannot run `precision` natively.
    """

    name: str
    op_type: str
    op_class: str
    precision: str
    macs: float
    weight_bytes: float
    act_bytes: float
    weight_elems: int = 0
    weight_sparsity: float = 0.0
    two_four: bool = False


def _precision(g: GraphIndex, node: onnx.NodeProto, weight_idx: int) -> str:
    if node.op_type in {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return "int8"
    if node.op_type == "MatMulNBits":
        return "int4"
    w = g.source_init(node.input[weight_idx]) if len(node.input) > weight_idx else None
    if w is None:
        return "fp32"
    if w.data_type in INT4_TYPES:
        return "int4"
    if w.data_type in INT8_TYPES:
        act = g.prod.get(node.input[0])
        return "int8" if act is not None and act.op_type == "DequantizeLinear" else "int8w"
    if w.data_type == TensorProto.FLOAT16:
        return "fp16"
    return "fp32"


def _sparsity(g: GraphIndex, name: str) -> tuple[float, bool]:
    init = g.source_init(name)
    if init is None or init.data_type in INT4_TYPES:
        return 0.0, False
    w = numpy_helper.to_array(init)
    zero = 0
    dq = g.prod.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear" and len(dq.input) > 2 and dq.input[2] in g.inits:
        zp = numpy_helper.to_array(g.inits[dq.input[2]])
        zero = zp.reshape(zp.shape + (1,) * (w.ndim - zp.ndim)) if zp.ndim == 1 and w.ndim > 1 else zp
    zeros = w == zero
    sparsity = float(zeros.mean()) if w.size else 0.0
    flat = zeros.reshape(w.shape[0], -1) if w.ndim > 1 else zeros.reshape(1, -1)
    two_four = flat.shape[1] % 4 == 0 and bool((flat.reshape(flat.shape[0], -1, 4).sum(-1) >= 2).all())
    return sparsity, two_four


def _macs(g: GraphIndex, node: onnx.NodeProto) -> tuple[float, str, int]:
    """(MACs, op class, index of the weight input) of a MAC node."""
    op, out = node.op_type, g.numel(node.output[0])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op in {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}:
        w_idx = 3 if op == "QLinearConv" else 1
        w_shape = g.shapes.get(node.input[w_idx], ())
        group = int(attrs.get("group", 1))
        if not w_shape:
            return 0.0, "conv", w_idx
        if op == "ConvTranspose":
            return float(g.numel(node.input[0]) * int(np.prod(w_shape[1:]))), "conv", w_idx
        per_out = int(np.prod(w_shape[1:]))  # (cin / group) * kernel
        cls = "dwconv" if group > 1 and w_shape[1] == 1 else "conv"
        return float(out * per_out), cls, w_idx
    w_idx = {"QLinearMatMul": 3, "MatMulNBits": 1}.get(op, 1)
    a_shape = g.shapes.get(node.input[0], ())
    k = a_shape[-1] if a_shape else 0
    if op == "Gemm" and attrs.get("transA", 0) and len(a_shape) == 2:
        k = a_shape[0]
    return float(out * k), "gemm", w_idx


def _is_fused_activation(g: GraphIndex, node: onnx.NodeProto) -> bool:
    src = g.prod.get(node.input[0]) if node.input else None
    return (node.op_type in FUSED_ACTIVATIONS and src is not None and src.op_type in MAC_OPS | {"Add"}
            and len(g.cons.get(src.output[0], [])) == 1)


def _requantized(g: GraphIndex, node: onnx.NodeProto) -> bool:
    """Output goes (through at most one activation) straight into QuantizeLinear."""
    outs = g.cons.get(node.output[0], [])
    if len(outs) == 1 and outs[0].op_type in FUSED_ACTIVATIONS:
        outs = g.cons.get(outs[0].output[0], [])
    return bool(outs) and all(c.op_type == "QuantizeLinear" for c in outs)


def fused_int8(g: GraphIndex, model: onnx.ModelProto) -> set[str]:
    """Outputs of QDQ-wrapped ops that run as integer kernels (QLinearConv, QGemm, QLinearAdd, ...).

    ONNX Runtime's QDQ rule: every activation input comes from DequantizeLinear and the output is
    re-quantized; otherwise the op runs in FP32 on weights dequantized at every run.
    """
    fused = set()
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_IO or node.op_type in FUSED_ACTIVATIONS:
            continue
        acts = [i for i in node.input if i and not g.const_weight(i)]
        from_dq = acts and all(g.prod.get(i) is not None and g.prod[i].op_type == "DequantizeLinear"
                               for i in acts)
        if from_dq and _requantized(g, node):
            fused.add(node.output[0])
    return fused


def _is_free_qdq(g: GraphIndex, node: onnx.NodeProto, fused: set[str]) -> bool:
    """Q/DQ of an activation that a runtime folds into its quantized neighbours."""
    if node.op_type == "DequantizeLinear":
        if g.const_weight(node.input[0]):
            return True  # weights: costed with the op that uses them
        consumers = g.cons.get(node.output[0], [])
        return bool(consumers) and all(c.output[0] in fused or c.op_type in FREE_OPS for c in consumers)
    src = g.prod.get(node.input[0])
    if src is not None and src.op_type in FUSED_ACTIVATIONS:
        src = g.prod.get(src.input[0])
    return src is not None and (src.output[0] in fused or src.op_type in FREE_OPS)


def _table_lookup(g: GraphIndex, node: onnx.NodeProto) -> NodeCost | None:
    """An embedding lookup (Gather or GatherBlockQuantized of a constant table): no MACs, but every gathered row
    is read from the table at its stored width (plus a scale and zero point per row when quantized) and written
    as FP32. None for other Gathers (of shapes, of activations): those stay free."""
    if node.op_type not in TABLE_GATHERS or not g.const_weight(node.input[0]):
        return None
    table = g.source_init(node.input[0])
    if table is None or len(table.dims) != 2:
        return None
    rows = g.numel(node.input[1])
    if node.op_type == "GatherBlockQuantized":  # a contrib op: shape inference gives no output shape
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        prec, per_row, width = ("int4" if bits == 4 else "int8"), 8.0, table.dims[1] * (2 if bits == 4 else 1)
    else:
        prec = {TensorProto.FLOAT16: "fp16", TensorProto.INT8: "int8", TensorProto.UINT8: "int8"}.get(table.data_type, "fp32")
        per_row, width = 0.0, table.dims[1]
    out = rows * width
    return NodeCost(node.name or node.output[0], node.op_type, "other", prec, 0.0, out * BYTES[prec] + rows * per_row,
                    out * 4.0 + rows * 8.0)


def analyze(model: str | Path | onnx.ModelProto, *, batch_size: int = 1) -> list[NodeCost]:
    """Cost of every node that does work, in graph order."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    g = GraphIndex(fix_batch(model, batch_size))
    fused = fused_int8(g, model)
    costs: list[NodeCost] = []
    for node in model.graph.node:
        op = node.op_type
        lookup = _table_lookup(g, node)
        if lookup is not None:
            costs.append(lookup)
            continue
        if op in FREE_OPS or (op == "Cast" and g.const_weight(node.input[0])) or _is_fused_activation(g, node):
            continue
        if op in {"QuantizeLinear", "DequantizeLinear"} and _is_free_qdq(g, node, fused):
            continue
        name = node.name or node.output[0]
        out_elems = g.numel(node.output[0])
        if op in MAC_OPS:
            macs, cls, w_idx = _macs(g, node)
            prec = _precision(g, node, w_idx)
            if prec == "int8" and node.output[0] not in fused and node.op_type not in {"QLinearConv", "QLinearMatMul"}:
                prec = "int8w"  # QDQ op the runtime cannot fuse: FP32 compute on dequantized weights
            w_name = node.input[w_idx] if len(node.input) > w_idx else ""
            w_elems = g.numel(w_name) if g.const_weight(w_name) else 0
            act_b = BYTES["int8"] if prec == "int8" else BYTES["fp32"]
            act_in = sum(g.numel(i) for i in node.input if i and not g.const_weight(i))
            sparsity, two_four = _sparsity(g, w_name) if w_elems else (0.0, False)
            w_bytes = w_elems * BYTES["int8" if prec == "int8w" else prec]
            costs.append(NodeCost(name, op, cls, prec, macs, w_bytes,
                                  (act_in + out_elems) * act_b, w_elems, sparsity, two_four))
            continue
        act_in = sum(g.numel(i) for i in node.input if i and not g.const_weight(i))
        act_b = 1.0 if node.output[0] in fused else 4.0
        costs.append(NodeCost(name, op, "other", "fp32", 0.0, 0.0, act_in * act_b + out_elems * 4.0))
    return costs

