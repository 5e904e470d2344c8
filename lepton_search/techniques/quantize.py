"""Quantization of an exported ONNX graph: what `bits` means, width by width.

- 32: FP32, unchanged.
- 16: weights of Conv/Gemm/MatMul stored as FP16 with a Cast back to FP32 (half the weight bytes; on
  this CPU the kernels still run FP32, so latency does not change; accuracy sees FP16 rounding).
- 8: INT8 weights and activations by NNCF post-training quantization (ONNX backend, QDQ format) on a
  calibration subset; ONNX Runtime fuses the QDQ pairs into QLinearConv / QLinearMatMul integer kernels.
- 4: INT4 weights (symmetric, per output channel) packed as INT4 initializers feeding an opset-21
  DequantizeLinear; activations stay FP32. The file shrinks ~8x; the kernels run FP32 on this CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}  # op type -> input index of the weight


def weight_ops(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes quantization acts on (Conv, Gemm, MatMul); empty: every width is a no-op."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in WEIGHT_OPS]


def quantize(model: onnx.ModelProto, bits: int, calibration: Sequence[np.ndarray] = ()) -> onnx.ModelProto:
    if bits == 32:
        return model
    if bits == 16:
        return _weight_only(model, _fp16)
    if bits == 8:
        return int8_static(model, calibration)
    if bits == 4:
        return _weight_only(model, _int4)
    raise ValueError(f"bits must be one of 32, 16, 8, 4; got {bits!r}")


def int8_static(model: onnx.ModelProto, calibration: Sequence[np.ndarray]) -> onnx.ModelProto:
    import nncf

    if not calibration:
        raise ValueError("INT8 quantization needs calibration batches")
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(calibration), lambda x: {input_name: x})
    return nncf.quantize(model, dataset, subset_size=len(calibration))


def _weight_inputs(model: onnx.ModelProto) -> dict[str, tuple[str, onnx.NodeProto]]:
    inits = {i.name for i in model.graph.initializer}
    found: dict[str, tuple[str, onnx.NodeProto]] = {}
    for node in model.graph.node:
        idx = WEIGHT_OPS.get(node.op_type)
        if idx is not None and len(node.input) > idx and node.input[idx] in inits:
            found[node.input[idx]] = (node.op_type, node)
    return found


def _out_axis(op_type: str, node: onnx.NodeProto, ndim: int) -> int:
    if op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if op_type == "MatMul":
        return ndim - 1
    return 0  # Conv: (out, in, kh, kw)


def _fp16(name: str, w: np.ndarray, axis: int) -> tuple[list[TensorProto], onnx.NodeProto]:
    stored = numpy_helper.from_array(w.astype(np.float16), f"{name}_fp16")
    node = helper.make_node("Cast", [stored.name], [name], to=TensorProto.FLOAT, name=f"{name}_cast")
    return [stored], node


def int4_quantize_array(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel INT4: q in [-8, 7], w ~= q * scale. Returns (q int8 array, scale float32)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.abs(w).max(axis=reduce) / 7.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -8, 7).astype(np.int8)
    return q, scale


def _int4(name: str, w: np.ndarray, axis: int) -> tuple[list[TensorProto], onnx.NodeProto]:
    q, scale = int4_quantize_array(w, axis)
    q_t = helper.make_tensor(f"{name}_int4", TensorProto.INT4, q.shape, q.flatten().tolist())
    s_t = numpy_helper.from_array(scale, f"{name}_scale")
    node = helper.make_node("DequantizeLinear", [q_t.name, s_t.name], [name], axis=axis, name=f"{name}_dq")
    return [q_t, s_t], node


def _weight_only(model: onnx.ModelProto, encode) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    targets = _weight_inputs(model)
    kept, new_nodes = [], []
    for init in model.graph.initializer:
        if init.name not in targets:
            kept.append(init)
            continue
        op_type, node = targets[init.name]
        w = numpy_helper.to_array(init).astype(np.float32)
        stored, decode = encode(init.name, w, _out_axis(op_type, node, w.ndim))
        kept.extend(stored)
        new_nodes.append(decode)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = new_nodes + list(model.graph.node)  # decoders first keeps topological order
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if encode is _int4:
        # INT4 tensors need opset 21; the ops the exporter emits keep their meaning there.
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = max(imp.version, 21)
        model.ir_version = max(model.ir_version, 10)
    return model
