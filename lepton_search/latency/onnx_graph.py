"""One index over an ONNX graph (producers, consumers, shapes, constants), read by every graph model here:
the per-node cost model (`graph_cost`), the kernel emulation (`kernels`) and its QDQ rules (`kernels_qdq`).

Example:
    >>> g = GraphIndex(fix_batch(onnx.load("model.onnx"), 1))  # doctest: +SKIP
    >>> g.numel(g.g.output[0].name)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

RESHAPES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
DQ_TRANSPARENT = {"MaxPool", *RESHAPES}  # ops ORT's QDQ propagation moves a DequantizeLinear across


def fix_batch(model: onnx.ModelProto, batch_size: int) -> onnx.ModelProto:
    """A copy with symbolic input dimensions set to `batch_size`, shapes inferred."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = batch_size
    del model.graph.value_info[:]
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.Clear()
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


class GraphIndex:
    """Producer and consumers of every tensor, the static shapes, initializers and graph outputs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.prod = {o: n for n in self.g.node for o in n.output}
        self.cons: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in [*self.g.input, *self.g.value_info, *self.g.output]:
            dims = vi.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        for name, init in self.inits.items():
            self.shapes[name] = tuple(init.dims)
        self.outputs = {o.name for o in self.g.output}

    def op(self, name: str) -> str:
        node = self.prod.get(name)
        return node.op_type if node is not None else ""

    def numel(self, name: str) -> int:
        s = self.shapes.get(name)
        return int(np.prod(s)) if s is not None else 0

    def const(self, name: str) -> bool:
        """Folded constant: initializer or Constant, through Cast/Identity (not through DequantizeLinear)."""
        if name in self.inits or name == "":
            return True
        node = self.prod.get(name)
        return node is not None and (node.op_type == "Constant" or (
            node.op_type in {"Cast", "Identity"} and self.const(node.input[0])))

    def const_weight(self, name: str) -> bool:
        """A weight: an initializer, or a chain of Cast/DequantizeLinear/Identity/Constant over them."""
        if name in self.inits or name == "":
            return True
        node = self.prod.get(name)
        return node is not None and node.op_type in {"Cast", "DequantizeLinear", "Identity", "Constant"} and all(
            self.const_weight(i) for i in node.input)

    def const_dq(self, name: str) -> bool:
        node = self.prod.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and self.const(node.input[0])

    def source_init(self, name: str) -> onnx.TensorProto | None:
        """The stored initializer behind a (possibly cast/dequantized) constant."""
        if name in self.inits:
            return self.inits[name]
        node = self.prod.get(name)
        if node is not None and node.op_type in {"Cast", "DequantizeLinear", "Identity"} and node.input:
            return self.source_init(node.input[0])
        return None

    def one_consumer(self, name: str) -> onnx.NodeProto | None:
        cons = self.cons.get(name, [])
        return cons[0] if len(cons) == 1 and name not in self.outputs else None

    def from_dq(self, name: str) -> bool:
        """Activation produced by DequantizeLinear, possibly through MaxPool / reshapes (QDQ propagation)."""
        node = self.prod.get(name)
        while node is not None and node.op_type in DQ_TRANSPARENT | {"Identity"}:
            node = self.prod.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear" and not self.const(node.input[0])

    def value(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.prod.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        if node is not None and node.op_type in {"Identity", "Cast"}:
            return self.value(node.input[0])
        return None
