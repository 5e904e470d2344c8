"""Quantization of an exported ONNX graph: what `bits` means, width by width.

- 32: FP32, unchanged.
- 16: weights of Conv/Gemm/MatMul stored as FP16 with a Cast back to FP32 (half the weight bytes; on
  this CPU the kernels still run FP32, so latency does not change; accuracy sees FP16 rounding).
- 8: INT8 weights and activations by NNCF post-training quantization (ONNX backend, QDQ format) on a
  calibration subset, activations per tensor and stored UINT8 (`activations_uint8`); ONNX Runtime fuses
  the QDQ pairs into QLinearConv / QLinearMatMul / QLinearAdd integer kernels.
  Graphs with integer inputs (token ids) take ONNX Runtime's dynamic INT8 instead (`int8_dynamic`), and so do
  graphs with an LSTM (NNCF leaves it FP32; ONNX Runtime's quantizer makes it DynamicQuantizeLSTM). GRU and
  vanilla RNN nodes stay FP32 at every width, with a warning: ONNX Runtime has no integer GRU/RNN kernel.
- 4: INT4 weights (symmetric, per output channel) packed as INT4 initializers feeding an opset-21
  DequantizeLinear; activations stay FP32. The file shrinks ~8x; the kernels run FP32 on this CPU.
  With `int4_block` set (`techniques.matmul_nbits`): ONNX Runtime's `MatMulNBits` instead, weights in blocks of
  that many input rows with their own scales, activations optionally INT8 inside the kernel (`accuracy_level` 4).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lepton_search.logging import routed_to_debug, stage
from lepton_search.space import SearchSpace
from lepton_search.techniques import int8_dynamic, matmul_nbits
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict, calibration_batches

WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1}  # op type -> input index of the weight
FLOAT_RECURRENT_OPS = ("GRU", "RNN")  # no quantizer here makes them integer


WEIGHTS = {32: "fp32", 16: "fp16", 8: "int8", 4: "int4"}
ACTIVATIONS = ("fp32", "uint8 static per tensor", "uint8 dynamic per call")
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM",
               "DynamicQuantizeMatMul")


@dataclass(frozen=True)
class QuantizationRoute:
    """What quantization did to one graph, written by the step that chose it (the model card reads it; nothing
    re-derives it). Optimum's `QuantizationConfig` is the model: is_static, per_channel, operators, checked here.

    Example:
        >>> QuantizationRoute(8, "uint8 static per tensor", True, ("Conv", "Gemm"), "nncf").summary()
        'INT8 weights (per channel) and activations (uint8 static per tensor; NNCF); Conv, Gemm quantized'
    """

    bits: int
    activations: str  # one of ACTIVATIONS
    per_channel: bool  # weight scales per output channel (False: per tensor; FP32/FP16: False)
    operators: tuple[str, ...]  # op types whose weights were quantized (sorted)
    tool: str  # nncf, onnxruntime quantize_dynamic, lepton_search (FP16 / INT4 weight-only), none
    left_float: tuple[str, ...] = ()  # nodes no quantizer here makes integer (GRU, RNN)
    detail: str = ""  # the route's own settings, for the card (MatMulNBits: block size, symmetry, accuracy level)

    def __post_init__(self) -> None:
        if self.bits not in WEIGHTS:
            raise ValueError(f"QuantizationRoute.bits: got {self.bits!r}; one of {sorted(WEIGHTS)}")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"QuantizationRoute.activations: got {self.activations!r}; one of {ACTIVATIONS}")
        if (self.bits == 8) == (self.activations == "fp32"):
            raise ValueError(f"QuantizationRoute: {self.bits} bits with {self.activations} activations; only INT8 "
                             "quantizes activations here")
        object.__setattr__(self, "operators", tuple(sorted(set(self.operators))))

    @property
    def weights(self) -> str:
        return WEIGHTS[self.bits]

    @property
    def is_static(self) -> bool:
        return self.activations == "uint8 static per tensor"

    def summary(self) -> str:
        """One line for a model card."""
        if self.bits == 32:
            return "FP32"
        channel = " (per channel)" if self.per_channel else ""
        tool = {"nncf": "NNCF", "onnxruntime": "ONNX Runtime"}.get(self.tool, self.tool)
        what = (f"INT8 weights{channel} and activations ({self.activations}; {tool})" if self.bits == 8
                else f"{self.weights.upper()} weights{channel}, FP32 activations")
        ops = f"; {', '.join(self.operators)} quantized" if self.operators else "; nothing to quantize"
        kept = f"; left FP32: {', '.join(self.left_float)}" if self.left_float else ""
        return what + (f" ({self.detail})" if self.detail else "") + ops + kept

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "operators": list(self.operators), "left_float": list(self.left_float),
                "summary": self.summary()}


def weight_ops(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes quantization acts on (Conv, Gemm, MatMul; LSTM at 8 bits); empty: every width is a no-op."""
    return [n.name or n.op_type for n in model.graph.node if n.op_type in WEIGHT_OPS or n.op_type == "LSTM"]


@dataclass(frozen=True)
class Route:
    """One way of making a file of `bits` bits: what it does to the graph, and whether quantization-aware
    fine-tuning trains for it (`static`: activations on fixed ranges, so the student trains with them simulated).

    A new route is one entry of `ROUTES` (and a name for it in `plan_for`'s table, or the settings type a
    technique's plan hands `QuantizationPlan.with_settings`), not another branch."""

    name: str
    bits: int
    static: bool
    needs_calibration: bool
    make: Any  # (graph, calibration, left_float[, settings]) -> (graph, QuantizationRoute)
    settings: type | None = None  # the settings record the route takes (None: none)


def _fp32(model, calibration, floating):
    return model, QuantizationRoute(32, "fp32", False, (), "none")


def _weight_only_route(bits, encode, per_channel):
    def make(model, calibration, floating):
        out = _weight_only(model, encode)
        return out, QuantizationRoute(bits, "fp32", per_channel, _weight_only_ops(model), "lepton_search", floating)
    return make


def _int4_matmulnbits(model, calibration, floating, settings):
    out = matmul_nbits.quantize_weights(model, settings)
    kept = tuple(sorted({*floating, *(n.name or n.op_type for n in out.graph.node if n.op_type in ("Conv", "Gemm"))}))
    return out, QuantizationRoute(4, "fp32", False, ("MatMul",) if matmul_nbits.nbits_nodes(out) else (),
                                  "onnxruntime MatMulNBits", kept, detail=settings.summary())


def _int8_dynamic(model, calibration, floating):
    out = int8_dynamic.int8_dynamic(model)  # per_channel=True
    return out, QuantizationRoute(8, "uint8 dynamic per call", True, _dynamic_ops(model, out), "onnxruntime", floating)


def _int8_static(model, calibration, floating):
    out = int8_static(model, calibration)
    return out, QuantizationRoute(8, "uint8 static per tensor", _per_channel_weights(out), _dq_weight_ops(out),
                                  "nncf", floating)


@dataclass(frozen=True)
class QuantizationPlan:
    """The route one candidate's file takes, chosen once before fine-tuning: quantization-aware fine-tuning reads
    `static`, the graph quantizer applies `route`, the trial records what it did (`QuantizationRoute`). Anchor:
    Optimum's `QuantizationConfig`, checked when made.

    `settings`: the route's own record where it takes one (`Route.settings`: MatMulNBits' block size, ...).

    Example:
        >>> plan_for(8, dynamic=True)
        QuantizationPlan(route='int8_dynamic', bits=8, settings=None)
        >>> plan_for(8, dynamic=False).static
        True
    """

    route: str
    bits: int
    settings: Any = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"QuantizationPlan.route: got {self.route!r}; one of {sorted(ROUTES)}")
        if ROUTES[self.route].bits != self.bits:
            raise ValueError(f"QuantizationPlan: route {self.route!r} makes {ROUTES[self.route].bits}-bit files, "
                             f"not {self.bits}")
        wants = ROUTES[self.route].settings
        if (wants is None) != (self.settings is None) or (wants is not None and not isinstance(self.settings, wants)):
            raise ValueError(f"QuantizationPlan: route {self.route!r} takes "
                             f"{wants.__name__ if wants else 'no settings'}, got {self.settings!r}")

    def with_settings(self, settings: Any) -> QuantizationPlan:
        """The plan of the route at these bits that takes `settings`' type (a technique's plan hands its record
        here, so no code outside this module names a route)."""
        routes = [r.name for r in ROUTES.values() if r.bits == self.bits and r.settings is type(settings)]
        if len(routes) != 1:
            raise ValueError(f"QuantizationPlan.with_settings: {len(routes)} {self.bits}-bit routes take "
                             f"{type(settings).__name__}")
        return QuantizationPlan(routes[0], self.bits, settings)

    @property
    def static(self) -> bool:
        return ROUTES[self.route].static

    @property
    def needs_calibration(self) -> bool:
        return ROUTES[self.route].needs_calibration


def plan_for(bits: int, *, dynamic: bool | Any = False) -> QuantizationPlan:
    """The plan for a `bits`-bit file; at 8 bits `dynamic` (a bool, or a function giving it, called only then)
    says whether the INT8 route is dynamic."""
    if bits not in WEIGHTS:
        raise ValueError(f"bits must be one of 32, 16, 8, 4; got {bits!r}")
    if bits != 8:
        return QuantizationPlan(BITS_ROUTE[bits], bits)
    return QuantizationPlan(INT8_ROUTE[bool(dynamic() if callable(dynamic) else dynamic)], 8)


def quantize(model: onnx.ModelProto, bits: int, calibration: Sequence[np.ndarray | Mapping[str, np.ndarray]] = (),
             *, int8_mode: str = "auto") -> onnx.ModelProto:
    """`model` at `bits` (see the module docstring); `quantize_with_route` also says how."""
    return quantize_with_route(model, bits, calibration, int8_mode=int8_mode)[0]


def quantize_with_route(model: onnx.ModelProto, bits: int, calibration: Sequence[np.ndarray | Mapping[str, np.ndarray]] = (),
                        *, int8_mode: str = "auto", plan: QuantizationPlan | None = None,
                        ) -> tuple[onnx.ModelProto, QuantizationRoute]:
    """`model` at `bits`, and the route taken: the record the model card and config.json carry. `plan`: the route
    chosen before fine-tuning (`compress`); without one, the graph's own (at 8 bits `int8_mode`, "auto":
    `int8_dynamic.dynamic_route`'s rule on the graph)."""
    plan = plan or plan_for(bits, dynamic=lambda: int8_dynamic.graph_takes_dynamic_route(model, int8_mode))
    if plan.bits != bits:
        raise ValueError(f"quantize_with_route: plan {plan.route!r} is for {plan.bits} bits, asked {bits}")
    if bits == 32:
        return _fp32(model, calibration, ())
    floating = tuple(sorted({n.name or n.op_type for n in model.graph.node if n.op_type in FLOAT_RECURRENT_OPS}))
    if floating:
        warnings.warn(f"{bits}-bit quantization leaves {', '.join(floating)} in FP32: ONNX Runtime has no integer "
                      "GRU/RNN kernel (an LSTM becomes DynamicQuantizeLSTM at 8 bits)", stacklevel=2)
    route = ROUTES[plan.route]
    if route.settings is not None:
        return route.make(model, calibration, floating, plan.settings)
    return route.make(model, calibration, floating)


def _per_channel_weights(model: onnx.ModelProto) -> bool:
    """Whether the weight DequantizeLinear nodes carry one scale per channel (read off the graph NNCF wrote)."""
    inits = {i.name: i for i in model.graph.initializer}
    sizes = [int(np.prod(inits[n.input[1]].dims)) for n in model.graph.node
             if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[1] in inits]
    return bool(sizes) and all(size > 1 for size in sizes)


def _weight_only_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    """Op types whose constant weights `_weight_only` converts."""
    return tuple(node.op_type for _, node in _weight_inputs(model).values())


def _dq_weight_ops(model: onnx.ModelProto, ops: set[str] | None = None) -> tuple[str, ...]:
    """Op types (of `ops`: weight ops and LSTM) that read a weight through a DequantizeLinear of a constant."""
    inits = {i.name for i in model.graph.initializer}
    dq_of_const = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    ops = ops or {*WEIGHT_OPS, "LSTM"}
    return tuple(n.op_type for n in model.graph.node if n.op_type in ops and any(i in dq_of_const for i in n.input))


def _dynamic_ops(before: onnx.ModelProto, after: onnx.ModelProto) -> tuple[str, ...]:
    """Op types of `before` that ONNX Runtime's dynamic quantizer replaced by integer ops (their count fell in
    `after`), plus those that now read a dequantized constant (a quantized embedding Gather)."""
    from collections import Counter

    was, now = Counter(n.op_type for n in before.graph.node), Counter(n.op_type for n in after.graph.node)
    replaced = {t for t in was if now[t] < was[t] and t not in {"Identity", "Constant"}}
    return tuple(replaced | set(_dq_weight_ops(after, ops={*WEIGHT_OPS, "LSTM", "Gather"})))


def int8_static(model: onnx.ModelProto, calibration: Sequence[np.ndarray | Mapping[str, np.ndarray]]) -> onnx.ModelProto:
    """INT8 by NNCF on `calibration`: arrays for the first graph input, or feeds (input name -> array) for several.
    NNCF's progress bars and log lines go to the "lepton_search" logger at DEBUG (`routed_to_debug`)."""
    if not calibration:
        raise ValueError("INT8 quantization needs calibration batches")
    with routed_to_debug():  # importing NNCF logs torch's CUDA probe; quantizing draws progress bars
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            QuantizationParameters,
        )

        input_name = model.graph.input[0].name
        dataset = nncf.Dataset(list(calibration), lambda x: dict(x) if isinstance(x, Mapping) else {input_name: x})
        # Per-tensor activation scales: ONNX Runtime's QLinearConv takes one input scale; NNCF's per-channel
        # scales before depthwise convolutions (an OpenVINO feature) left those convolutions in float.
        per_tensor = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
        # Embedding tables (Gathers) stay FP32: they are `embedding_bits`' to store (row-wise, techniques.embeddings)
        tables = nncf.IgnoredScope(types=["Gather"], validate=False)
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), advanced_parameters=per_tensor,
                                  ignored_scope=tables)
    return activations_uint8(quantized)


def activations_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store every INT8 activation as UINT8 with its zero point moved by +128 (the same grid of values).

    NNCF makes activations after ReLU/Clip unsigned and others (a residual branch, a projection) signed;
    ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv only when the input and
    output types agree, so a mixed model keeps float Convs between Q/DQ pairs. MobileNetV2 at 64x64 ran 5x
    slower in INT8 than FP32 that way; all-UINT8 it runs every Conv and Add as integer kernels (U8S8, the
    x86 VNNI format). Weights stay INT8. The outputs are bit-identical.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    moved: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zp = numpy_helper.to_array(inits[node.input[2]])
        dqs = consumers.get(node.output[0], [])
        if zp.dtype != np.int8 or not all(d.op_type == "DequantizeLinear" and len(d.input) > 2 for d in dqs):
            continue
        new = numpy_helper.from_array((zp.astype(np.int16) + 128).astype(np.uint8), f"{node.input[2]}_u8")
        model.graph.initializer.append(new)
        inits[new.name] = new
        for n in (node, *dqs):
            n.input[2] = new.name
        moved.add(node.output[0])
    used = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.initializer if i.name in used or i.name in {g.name for g in model.graph.input}]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    info = [v for v in model.graph.value_info if v.name not in moved]  # their stated type was INT8
    del model.graph.value_info[:]
    model.graph.value_info.extend(info)
    return model


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


ROUTES = {r.name: r for r in (
    Route("fp32", 32, static=False, needs_calibration=False, make=_fp32),
    Route("fp16", 16, static=False, needs_calibration=False, make=_weight_only_route(16, _fp16, per_channel=False)),
    Route("int8_dynamic", 8, static=False, needs_calibration=False, make=_int8_dynamic),
    Route("int8_static", 8, static=True, needs_calibration=True, make=_int8_static),
    Route("int4_qdq", 4, static=False, needs_calibration=False, make=_weight_only_route(4, _int4, per_channel=True)),
    Route("int4_matmulnbits", 4, static=False, needs_calibration=False, make=_int4_matmulnbits,
          settings=matmul_nbits.Int4Settings),
)}
# bits -> its route; at 8 bits the INT8 rule picks (`int8_dynamic.dynamic_route`, overridden by int8_mode)
BITS_ROUTE = {32: "fp32", 16: "fp16", 4: "int4_qdq"}
INT8_ROUTE = {True: "int8_dynamic", False: "int8_static"}




class Quantize(Technique):
    """bits / int8_mode: the graph's arithmetic. The route is chosen once, in `plan`, before fine-tuning (a static
    route fine-tunes quantization-aware), and applied to the exported graph as chosen."""

    name, knobs, stage, order, keyed = "quantize", ("bits", "int8_mode"), "graph", 0, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        verdict = Verdict()
        if any(b != 32 for b in space.bits) and not weight_ops(ctx.graph):
            verdict.changes["bits"] = (32,)
            verdict.notes.append("bits fixed at 32: the exported graph has no Conv/Gemm/MatMul for quantization to "
                                 "act on")
        modes = [m for m in space.domain("int8_mode") if m != "auto"]
        if modes and (8 not in space.bits or verdict.changes.get("bits") == (32,)):
            verdict.changes["int8_mode"] = "auto"
            verdict.notes.append(f"int8_mode fixed at 'auto': {modes[0]!r} acts on 8-bit files only and bits has no 8")
        return verdict

    def plan(self, build: Build) -> None:
        specs, mode = build.workload.inputs, build.config.int8_mode
        build.route = plan_for(build.config.bits, dynamic=lambda: int8_dynamic.module_takes_dynamic_route(
            build.model, [s.dtype for s in specs], shapes=[s.shape for s in specs], int8_mode=mode))

    def apply(self, build: Build) -> None:
        bits = build.config.bits
        with stage(f"quantize to {bits} bits" if bits < 32 else "FP32 (no quantization)"):
            calib = calibration_batches(build.workload, build.settings.calibration_size, build.seed,
                                        build.transform) if build.route.needs_calibration else []
            build.graph, route = quantize_with_route(build.graph, bits, calib, plan=build.route)
        build.record.update(route.as_dict())


TECHNIQUES = (Quantize(),)
