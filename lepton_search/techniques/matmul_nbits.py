"""Weight-only INT4 in blocks through ONNX Runtime's `MatMulNBits` (knobs `int4_block`, `int4_symmetric`,
`int4_accuracy_level`, `int4_zero_point`): the 4-bit route language models are served with.

`MatMulNBitsQuantizer` replaces each MatMul whose weight is a constant 2-D matrix by one `com.microsoft::MatMulNBits`
node: every `block_size` consecutive input rows of an output column share a scale (and, asymmetric, a 4-bit zero
point); the weights are stored packed, two to a byte. `accuracy_level` is the arithmetic ONNX Runtime may use on the
activations (0: unset, the kernel's default; 1: FP32; 2: FP16; 3: BF16; 4: INT8): on an x86 CPU level 4 quantizes
each block of activations to INT8 at run time and runs integer dot-products, the level ONNX Runtime GenAI's model
builder picks for CPU (onnxruntime/mobius PR #402: Qwen2.5-0.5B decode 39.3 -> 91.8 tokens/s). Activations stay
FP32 between nodes; Conv and Gemm weights are left FP32 (recorded as such).

`int4_block` 0 (its no-op) keeps the other 4-bit route, per-channel INT4 feeding a DequantizeLinear (`quantize`'s
`int4_qdq`). The route record names what was done (`QuantizationRoute.detail`). Anchor: Optimum's
`QuantizationConfig` / ONNX Runtime's `DefaultWeightOnlyQuantConfig`, checked when made (`Int4Settings`).

`int4_zero_point` "float" (asymmetric only): each block's own min/max grid, w = scale * q + offset with a float
offset (GGUF Q4_1's grid), written by `_int4_offset` as symmetric MatMulNBits plus an exact block-sum correction
(ONNX Runtime's quantizer has no float zero points, and its CPU kernel runs float ones ~70x slower).
`int4_head_bits` 8 (`quantize_tied_head`, first in `quantize_weights`): a tied embedding and LM head stored once,
8-bit blocks of 32 whatever `int4_block` is (`GatherBlockQuantized` + 8-bit `MatMulNBits`), GGUF Q8_0's grid; 4 (the no-op): the head INT4 with
the others, the embedding FP32. A model without a tied pair is refused by name.
`quantize_genai_folder`: both on a folder `onnxruntime_genai` loads (the model builder's fused FP32 build:
GroupQueryAttention, a fused q/k/v MatMul, the embedding a Gather of the LM head's Transpose), written beside it.

A base that is itself a dequantized 4-bit model (bbc-smollm2's SmolLM2 GGUF, Q4_1 in blocks of 32) is near the grid
that blocks of 32 re-make; compare at block 128 too, and say which.

Example:
    >>> Int4Settings(32, True, 4).summary()
    'blocks of 32, symmetric, accuracy level 4'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from lepton_search.errors import ConfigError
from lepton_search.knobs import INT4_ACCURACY_LEVELS, INT4_BLOCKS, INT4_HEAD_BITS, INT4_ZERO_POINTS, KNOBS
from lepton_search.logging import routed_to_debug
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.techniques._int4_offset import quantize_offset
from lepton_search.techniques._tied_head import quantize_tied_head, tied_pair
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict

OP_TYPE = "MatMulNBits"  # com.microsoft
HEAD_BLOCK = 32  # int4_head_bits 8: the tied table's 8-bit blocks, whatever int4_block is (GGUF Q8_0's block)
__all__ = ["Int4Settings", "MatMulNBits", "nbits_nodes", "quantize_genai_folder", "quantize_tied_head", "quantize_weights",
           "weight_widths"]


@dataclass(frozen=True)
class Int4Settings:
    """How `MatMulNBits` weights are made: `block_size` input rows share a scale; symmetric (no zero point) or not;
    the activations' arithmetic (`accuracy_level`, see the module docstring)."""

    block_size: int
    symmetric: bool
    accuracy_level: int
    zero_point: str = "int"  # asymmetric: a 4-bit integer zero point, or a float offset ("float", `_int4_offset`)
    head_bits: int = 4  # a tied embedding / LM head: with the other MatMuls (4), or once at 8 bits (`quantize_tied_head`)

    def __post_init__(self) -> None:
        if self.zero_point not in INT4_ZERO_POINTS:
            raise ValueError(f"Int4Settings.zero_point: got {self.zero_point!r}; one of {list(INT4_ZERO_POINTS)}")
        if self.symmetric and self.zero_point != "int":
            raise ValueError(f"Int4Settings.zero_point: got {self.zero_point!r} with symmetric=True (no zero point); "
                             "give symmetric=False for a float offset, or zero_point='int'")
        if self.block_size not in INT4_BLOCKS or not self.block_size:
            raise ValueError(f"Int4Settings.block_size: got {self.block_size!r}; one of {list(INT4_BLOCKS[1:])}")
        if self.head_bits not in INT4_HEAD_BITS:
            raise ValueError(f"Int4Settings.head_bits: got {self.head_bits!r}; one of {list(INT4_HEAD_BITS)}")
        if self.accuracy_level not in INT4_ACCURACY_LEVELS:
            raise ValueError(f"Int4Settings.accuracy_level: got {self.accuracy_level!r}; one of "
                             f"{list(INT4_ACCURACY_LEVELS)}")

    def summary(self) -> str:
        level = f"accuracy level {self.accuracy_level}" if self.accuracy_level else "default accuracy level"
        kind = "symmetric" if self.symmetric else "asymmetric, float offset (min/max)" if self.zero_point == "float" \
            else "asymmetric"
        head = ", tied embedding and LM head 8-bit" if self.head_bits == 8 else ""
        return f"blocks of {self.block_size}, {kind}, {level}{head}"


def weight_widths(model: onnx.ModelProto) -> dict[str, int]:
    """MatMul node -> the input width (K, the rows of its constant 2-D weight) of every MatMul `MatMulNBits` takes."""
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name or n.output[0]: int(inits[n.input[1]].dims[0]) for n in model.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2}


def check_block(widths: dict[str, int], block: int) -> None:
    """A block wider than the narrowest MatMul input is refused in one line (it would be mostly padding)."""
    narrowest = min(widths.values(), default=block)
    if block > narrowest:
        raise ConfigError("knobs.int4_block", block, f"is wider than the model's narrowest MatMul input "
                          f"({narrowest}): a block would be mostly padding; give at most {narrowest}")


def quantize_weights(model: onnx.ModelProto, settings: Int4Settings) -> onnx.ModelProto:
    """`model` with every MatMul of a constant 2-D weight as a `MatMulNBits` node (see the module docstring), a tied
    embedding and LM head first stored once at 8 bits where `settings.head_bits` is 8 (`quantize_tied_head`, blocks
    of `HEAD_BLOCK`); a block wider than the narrowest such MatMul's input is refused (`check_block`)."""
    check_block(weight_widths(model), settings.block_size)
    if settings.head_bits == 8:
        model = quantize_tied_head(model, block=HEAD_BLOCK, accuracy_level=settings.accuracy_level)
    if settings.zero_point == "float":
        return quantize_offset(model, settings.block_size, settings.accuracy_level)
    with routed_to_debug():  # importing the quantizer calls logging.basicConfig(INFO); it logs every node
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()), bits=4,
                                         block_size=settings.block_size, is_symmetric=settings.symmetric,
                                         accuracy_level=settings.accuracy_level or None)
        quantizer.process()
    return quantizer.model.model


def quantize_genai_folder(source: str | Path, target: str | Path, settings: Int4Settings) -> Path:
    """`target`: the generation folder `source` (its `model.onnx`, weights inline or in external data) with
    `quantize_weights`' MatMuls (the tied embedding and LM head at `settings.head_bits`); its other files
    (genai_config.json, the tokenizer's) copied; returns the new `model.onnx`. A MatMul weight concatenated
    along its output columns (the builder's fused q/k/v) keeps its blocks along K: each column is quantized alone.

    Example:
        >>> quantize_genai_folder("builder-fp32", "fused-int4", Int4Settings(32, False, 4, "float", 8))  # doctest: +SKIP
    """
    source, target = Path(source), Path(target)
    if not (source / "model.onnx").is_file():
        raise ConfigError("source", str(source), "has no model.onnx: give a folder onnxruntime_genai loads "
                          "(the model builder's output)")
    graph = quantize_weights(onnx.load(str(source / "model.onnx")), settings)
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            shutil.copy2(path, target / path.name)
    out = target / "model.onnx"
    for stale in target.glob("model.onnx*"):
        stale.unlink()
    large = graph.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit
    onnx.save(graph, str(out), save_as_external_data=large, location="model.onnx.data" if large else None)
    return out


def nbits_nodes(model: onnx.ModelProto) -> int:
    return sum(n.op_type == OP_TYPE for n in model.graph.node)


class MatMulNBits(Technique):
    """int4_block / int4_symmetric / int4_accuracy_level: at 4 bits with a block size, the plan's route becomes
    `MatMulNBits` with these settings (chosen before fine-tuning, applied by `quantize` with the others)."""

    name, keyed = "matmul_nbits", False
    knobs, stage, order = ("int4_block", "int4_symmetric", "int4_accuracy_level", "int4_zero_point",
                           "int4_head_bits"), "graph", 1

    def active(self, config: CompressionConfig) -> bool:
        """Only a 4-bit file with a block size is a MatMulNBits file: elsewhere its knobs do nothing."""
        return config.bits == 4 and bool(config.int4_block)

    def knob_values(self, config: CompressionConfig) -> dict[str, Any]:
        values = super().knob_values(config)
        if config.int4_symmetric:  # symmetric blocks have no zero point to choose
            values["int4_zero_point"] = KNOBS["int4_zero_point"].noop
        return values

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        blocks = [b for b in space.domain("int4_block") if b]
        settings = {name: [v for v in space.domain(name) if v != KNOBS[name].noop] for name in self.knobs
                    if name != "int4_block"}
        if not blocks:
            for name, values in settings.items():
                if values:
                    raise ConfigError(f"knobs.{name}", values[0], "acts on MatMulNBits files only: give int4_block "
                                      f"one of {list(INT4_BLOCKS[1:])} (and 4 in bits), or remove the knob")
            return Verdict()
        if settings["int4_zero_point"] and not settings["int4_symmetric"]:
            raise ConfigError("knobs.int4_zero_point", settings["int4_zero_point"][0], "is the zero point of "
                              "asymmetric blocks and int4_symmetric is only true: add false to int4_symmetric")
        if 4 not in space.bits:
            raise ConfigError("knobs.int4_block", blocks[0], f"acts on 4-bit files only and bits is "
                              f"{list(space.bits)}: add 4 to bits, or set int4_block to 0")
        widths = weight_widths(ctx.graph)
        if not widths:
            raise ConfigError("knobs.int4_block", blocks[0], "MatMulNBits takes MatMul weights and the exported graph "
                              "has none (Conv / Gemm only): set int4_block to 0 (per-channel INT4)")
        check_block(widths, max(blocks))
        if settings["int4_head_bits"] and tied_pair(ctx.graph.graph, HEAD_BLOCK) is None:
            raise ConfigError("knobs.int4_head_bits", 8, f"stores a tied embedding and LM head once and the model has "
                              f"no embedding tied to its LM head at a width a multiple of {HEAD_BLOCK}: set "
                              "int4_head_bits to 4")
        verdict = Verdict()
        padded = sorted({b for b in blocks for k in widths.values() if k % b})
        if padded:
            verdict.notes.append(f"int4_block {padded}: some MatMul input widths ({sorted(set(widths.values()))}) "
                                 "are not multiples; ONNX Runtime pads their last block with zeros")
        return verdict

    def plan(self, build: Build) -> None:
        config = build.config
        block, symmetric, level, zero_point, head_bits = config.int4_block, bool(config.int4_symmetric), \
            config.int4_accuracy_level, str(config.int4_zero_point), int(config.int4_head_bits)
        zero_point = "int" if symmetric else zero_point  # symmetric blocks have none to choose
        if block and build.route.bits == 4:  # the plan quantize made from bits
            build.route = build.route.with_settings(Int4Settings(int(block), symmetric, int(level), zero_point,
                                                                 head_bits))


TECHNIQUES = (MatMulNBits(),)
