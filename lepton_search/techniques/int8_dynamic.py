"""INT8 for token-id models (Transformers, RNNs): ONNX Runtime's dynamic quantization.

Weights of MatMul/Gemm (and LSTM, and embedding Gathers) are stored INT8; each activation is quantized
to UINT8 at run time from its own range, so no calibration set is needed and no range is fixed from a
few batches (the ranges of attention activations vary by sequence). ONNX Runtime's optimizer fuses
`DynamicQuantizeLinear -> MatMulInteger` into `DynamicQuantizeMatMul` / `MatMulIntegerToFloat` integer
kernels; the activation x activation MatMuls of attention stay FP32.

Why not the static QDQ route (`quantize.int8_static`) for these models: on MiniLM-L6 at sequence length
128, one thread, NNCF's static INT8 ran slower than FP32 (106 vs 67 ms, default preset) or no faster
(61 vs 57 ms, `ModelType.TRANSFORMER`), while dynamic INT8 ran 2.3x faster (22 vs 51 ms).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto

INTEGER_INPUTS = {TensorProto.INT64, TensorProto.INT32}
INTEGER_INPUT_DTYPES = {"int64", "int32"}  # the same set, as a Workload's InputSpec names it


def dynamic_route(*, token_inputs: bool, lstm: bool) -> bool:
    """The one rule for which INT8 route a model takes: dynamic for token-id inputs or an LSTM, else static.

    `quantize.quantize` applies it to the exported graph and `candidate.compress` to the torch model before
    fine-tuning (a dynamic-route model fine-tunes in float: static fake-quant would train for a file that is
    never made); both go through here so they cannot disagree.
    """
    return token_inputs or lstm


def has_token_inputs(model: onnx.ModelProto) -> bool:
    """True when a graph input holds integers (token ids, masks): the INT8 route is then dynamic."""
    return any(i.type.tensor_type.elem_type in INTEGER_INPUTS for i in model.graph.input)


def graph_takes_dynamic_route(model: onnx.ModelProto) -> bool:
    """`dynamic_route` of an exported graph."""
    return dynamic_route(token_inputs=has_token_inputs(model), lstm=any(n.op_type == "LSTM" for n in model.graph.node))


def module_takes_dynamic_route(module, input_dtypes) -> bool:
    """`dynamic_route` of a torch model whose inputs have `input_dtypes` (InputSpec dtype names)."""
    from torch import nn

    return dynamic_route(token_inputs=any(d in INTEGER_INPUT_DTYPES for d in input_dtypes),
                         lstm=any(isinstance(m, nn.LSTM) for m in module.modules()))


def int8_dynamic(model: onnx.ModelProto, *, per_channel: bool = True) -> onnx.ModelProto:
    """`model` with INT8 weights and run-time UINT8 activations (onnxruntime.quantization.quantize_dynamic)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="lepton_int8_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel)
        return onnx.load(str(dst))
