"""INT8 for Transformers and RNNs: ONNX Runtime's dynamic quantization.

Weights of MatMul/Gemm (and LSTM, and embedding Gathers) are stored INT8; each activation is quantized
to UINT8 at run time from its own range, so no calibration set is needed and no range is fixed from a
few batches (the ranges of attention activations vary by sequence). ONNX Runtime's optimizer fuses
`DynamicQuantizeLinear -> MatMulInteger` into `DynamicQuantizeMatMul` / `MatMulIntegerToFloat` integer
kernels; the activation x activation MatMuls of attention stay FP32.

Why not the static QDQ route (`quantize.int8_static`) for these models: on this AMD EPYC (AVX-512 VNNI), one thread,
`experiments/int8_modes.py` measured MiniLM-L6 at 128 tokens dynamic 2.34x FP32 at -0.23 pt test against NNCF
static 2.16x at +1.41 pt (and 58.8 MB against 23.0: static leaves the embeddings FP32), and the fashion-vit ViT
dynamic 1.73x against static 1.52x at the same accuracy. The `int8_mode` knob overrides the rule per trial
("dynamic" / "static").
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import onnx

from lepton_search.knobs import INT8_MODES
from lepton_search.logging import routed_to_debug

ATTENTION_OPS = ("Attention", "MultiHeadAttention", "QAttention")  # ONNX Runtime's fused attention (techniques.fusion)
TOKEN_DTYPES = {"int64", "int32"}  # input dtypes (InputSpec names) that hold token ids or masks


def dynamic_route(input_dtypes: Iterable[str], *, lstm: bool, shapes: Iterable[Sequence[int]] | None = None,
                  attention: bool = False) -> bool:
    """The one rule for which INT8 route a model takes: dynamic for token-id inputs, an LSTM or self-attention (a
    Transformer on float inputs, e.g. a ViT), else static.

    A token input is an integer input holding a sequence per sample (per-sample shape (length,) or more). One id
    per sample (a recommender's user and item, per-sample shape ()) is not a sequence: such a model's MLP takes
    the static route like any other (its embedding tables are `embedding_bits`'). `shapes`: the per-sample shapes,
    in the same order; None (unknown) counts every integer input as tokens.

    `quantize.quantize` applies it to the exported graph, `candidate.compress` to the torch model before
    fine-tuning (a dynamic-route model fine-tunes in float: static fake-quant would train for a file that is
    never made) and the model card to the study's recorded inputs; all go through here so they cannot disagree.
    """
    dtypes = list(input_dtypes)
    ranks = [len(tuple(s)) for s in shapes] if shapes is not None else [1] * len(dtypes)
    return lstm or attention or any(d in TOKEN_DTYPES and r >= 1 for d, r in zip(dtypes, ranks))


def graph_input_dtypes(model: onnx.ModelProto) -> list[str]:
    """The dtype names of a graph's inputs ('float32', 'int64', ...), as an InputSpec names them (a type numpy
    has no name for keeps ONNX's own, lower-cased)."""
    def name(elem_type: int) -> str:
        try:
            return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
        except (KeyError, TypeError, ValueError):
            return onnx.TensorProto.DataType.Name(elem_type).lower()

    return [name(i.type.tensor_type.elem_type) for i in model.graph.input]


def graph_input_shapes(model: onnx.ModelProto) -> list[tuple[int | str, ...]]:
    """The per-sample shapes of a graph's inputs (the batch dimension dropped)."""
    return [tuple(d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim)[1:] for i in model.graph.input]


def has_token_inputs(model: onnx.ModelProto) -> bool:
    """True when a graph input holds integer sequences (token ids, masks): the INT8 route is then dynamic."""
    return dynamic_route(graph_input_dtypes(model), lstm=False, shapes=graph_input_shapes(model))


def has_attention(model: onnx.ModelProto) -> bool:
    """True when the graph multiplies two computed tensors (a MatMul with no constant operand) and takes a Softmax:
    self-attention's scores and mixing (or holds ONNX Runtime's fused attention op). Convolutions, MLPs and
    recommenders' MLP towers multiply by weights only."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    pairs = any(n.op_type == "MatMul" and not constants & set(n.input) for n in model.graph.node)
    fused = any(n.op_type in ATTENTION_OPS for n in model.graph.node)
    return fused or (pairs and any(n.op_type == "Softmax" for n in model.graph.node))


def _by_mode(int8_mode: str, rule: Callable[[], bool]) -> bool:
    """The `int8_mode` knob over the rule: "dynamic" / "static" decide, "auto" asks `rule`."""
    if int8_mode not in INT8_MODES:
        raise ValueError(f"int8_mode must be 'auto', 'dynamic' or 'static', got {int8_mode!r}")
    return int8_mode == "dynamic" or (int8_mode == "auto" and rule())


def graph_takes_dynamic_route(model: onnx.ModelProto, int8_mode: str = "auto") -> bool:
    """`dynamic_route` of an exported graph, unless `int8_mode` says otherwise."""
    return _by_mode(int8_mode, lambda: dynamic_route(
        graph_input_dtypes(model), lstm=any(n.op_type == "LSTM" for n in model.graph.node),
        shapes=graph_input_shapes(model), attention=has_attention(model)))


def module_takes_dynamic_route(module, input_dtypes: Iterable[str], *, shapes: Iterable[Sequence[int]] | None = None,
                               int8_mode: str = "auto") -> bool:
    """`dynamic_route` of a torch model whose inputs have `input_dtypes` (InputSpec dtype names) and per-sample
    `shapes`, unless `int8_mode` says otherwise."""
    from torch import nn

    from lepton_search.techniques import families

    def rule() -> bool:
        return dynamic_route(input_dtypes, lstm=any(isinstance(m, nn.LSTM) for m in module.modules()), shapes=shapes,
                             attention=families.has_attention(module))

    return _by_mode(int8_mode, rule)


def int8_dynamic(model: onnx.ModelProto, *, per_channel: bool = True) -> onnx.ModelProto:
    """`model` with INT8 weights and run-time UINT8 activations (onnxruntime.quantization.quantize_dynamic).

    The quantizer's hint to run its pre-processing first goes to the "lepton_search" logger at DEBUG: the
    graphs here are already shape-inferred by the exporter, and the hint is printed on every call.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="lepton_int8_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        # a fused graph (techniques.fusion) holds com.microsoft ops shape inference cannot type: they are float
        fused = any(n.domain == "com.microsoft" for n in model.graph.node)
        extra = {"DefaultTensorType": onnx.TensorProto.FLOAT} if fused else {}
        with routed_to_debug():
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=per_channel, extra_options=extra)
        return onnx.load(str(dst))
