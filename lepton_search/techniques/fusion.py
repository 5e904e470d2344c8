"""Operator fusion of a Transformer's exported graph: ONNX Runtime's transformer optimizer
(`onnxruntime.transformers.optimizer.optimize_model`), the `fusion` knob's "ort".

The optimizer rewrites the exported attention subgraph (MatMul, Reshape, Transpose, Softmax...) into one
`Attention` / `MultiHeadAttention` contrib op, LayerNorm + residual Add into `SkipLayerNormalization`, MatMul +
Add + Gelu into `BiasGelu`/`FastGelu`, and the embeddings into `EmbedLayerNormalization` (BERT). Optimum and Olive
run it by default. Whether it pays is the CPU's and the model's: on MiniLM-L6 at 128 tokens on an AVX-512 VNNI
EPYC the fused file ran 35.0 ms against 31.1 unfused (ORT's own session-level fusion already covers much of it),
so it is a knob, not a step, and the search measures it.

Which ops fused is recorded per trial (`fused_ops`); a file whose attention did not fuse while the model has
attention layers gets a warning, on the model card too: the search then times the unfused attention, which is
what that file runs, but the user asked for a fused one.

Example:
    >>> import torch, transformers  # doctest: +SKIP
    >>> fused, counts = fuse(graph, model)  # doctest: +SKIP
    >>> counts["Attention"]  # doctest: +SKIP
    6
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.logging import routed_to_debug, stage
from lepton_search.space import SearchSpace
from lepton_search.techniques import families, prune_transformer
from lepton_search.techniques.int8_dynamic import ATTENTION_OPS
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict


def model_type(model: nn.Module) -> str:
    """The optimizer's `model_type` for `model`'s family (its record's `fusion`: "bert", "vit", "gpt2"); refused for
    a model with no family record, or whose family the optimizer has no model type for (Llama)."""
    family = families.family_of(model)
    if family is None:
        raise ValueError(f"{type(model).__name__} has no Transformer encoder layer or decoder block of a known family "
                         "for ONNX Runtime's transformer optimizer to fuse")
    if family.fusion is None:
        raise ValueError(f"ONNX Runtime's transformer optimizer has no model type for the {family.name!r} family")
    return family.fusion


def fuse(graph: onnx.ModelProto, model: nn.Module) -> tuple[onnx.ModelProto, dict[str, int]]:
    """`graph` (the export of `model`) fused by ONNX Runtime's transformer optimizer, and the count of every fused
    op type it made (zeros left out). Head count and attention width are read off the (pruned) model, so a file
    whose layers lost heads fuses too."""
    from onnxruntime.transformers.optimizer import optimize_model

    kind = model_type(model)  # before the shapes: a model without encoder layers is refused by name
    shape = prune_transformer.layer_shapes(model)[0]
    with tempfile.TemporaryDirectory(prefix="lepton_fuse_") as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(graph, str(src))
        with routed_to_debug():
            fused = optimize_model(str(src), model_type=kind, num_heads=shape.heads,
                                   hidden_size=shape.heads * shape.head_size, opt_level=1)
        counts = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
        return fused.model, counts


def attention_fused(counts: dict[str, int]) -> bool:
    return any(counts.get(op, 0) for op in ATTENTION_OPS)


class Fusion(Technique):
    """fusion: "ort" fuses the exported graph before quantization; graph-only (no effect on training)."""

    name, knobs, stage, order, keyed = "fusion", ("fusion",), "export", 10, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        """Refused in one line where it cannot act (no Transformer layers, a static INT8 route, nothing fused in
        the base's graph); a note when the optimizer fuses the graph but not its attention."""
        if "ort" not in space.domain("fusion"):
            return Verdict()
        workload = ctx.workload
        family = families.family_of(workload.model)
        if family is None or family.fusion is None:
            what = (f"no Transformer encoder layer or decoder block of a known family ({', '.join(families.FAMILIES.names)})"
                    if family is None else f"{family.name!r} blocks, for which ONNX Runtime's optimizer has no model type")
            raise ConfigError("knobs.fusion", "ort", f"workload {workload.name!r} has {what} for ONNX Runtime's "
                              "transformer optimizer; remove the knob")
        if 8 in space.bits and "static" in space.domain("int8_mode"):
            raise ConfigError("knobs.fusion", "ort", "NNCF's static INT8 cannot quantize fused contrib ops; search "
                              "int8_mode auto or dynamic with fusion, or static without it")
        counts = fuse(ctx.graph, workload.model)[1]
        if not counts:
            raise ConfigError("knobs.fusion", "ort", f"ONNX Runtime's transformer optimizer fuses nothing in "
                              f"{workload.name!r}'s graph; remove the knob")
        if attention_fused(counts):
            return Verdict()
        return Verdict(notes=[(f"fusion 'ort' fuses {counts} but no attention in this model's graph: its trials time "
                              "unfused attention")])

    def apply(self, build: Build) -> None:
        fused_ops = None
        if build.config.fusion == "ort":
            with stage("fuse (ONNX Runtime transformer optimizer)"):
                build.graph, fused_ops = fuse(build.graph, build.model)
            if not attention_fused(fused_ops):
                warnings.warn(f"fusion 'ort': attention not fused in {build.config.label()} (fused "
                              f"{fused_ops or 'nothing'}); the file runs unfused attention", stacklevel=2)
        build.record.update(fusion=build.config.fusion, fused_ops=fused_ops)


TECHNIQUES = (Fusion(),)
