"""Weight-only INT4 in blocks through ONNX Runtime's `MatMulNBits` (knobs `int4_block`, `int4_symmetric`,
`int4_accuracy_level`): the 4-bit route language models are served with.

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

A base that is itself a dequantized 4-bit model (bbc-smollm2's SmolLM2 GGUF, Q4_1 in blocks of 32) is near the grid
that blocks of 32 re-make; compare at block 128 too, and say which.

Example:
    >>> Int4Settings(32, True, 4).summary()
    'blocks of 32, symmetric, accuracy level 4'
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from lepton_search.errors import ConfigError
from lepton_search.knobs import INT4_ACCURACY_LEVELS, INT4_BLOCKS
from lepton_search.logging import routed_to_debug
from lepton_search.space import SearchSpace
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict

OP_TYPE = "MatMulNBits"  # com.microsoft


@dataclass(frozen=True)
class Int4Settings:
    """How `MatMulNBits` weights are made: `block_size` input rows share a scale; symmetric (no zero point) or not;
    the activations' arithmetic (`accuracy_level`, see the module docstring)."""

    block_size: int
    symmetric: bool
    accuracy_level: int

    def __post_init__(self) -> None:
        if self.block_size not in INT4_BLOCKS or not self.block_size:
            raise ValueError(f"Int4Settings.block_size: got {self.block_size!r}; one of {list(INT4_BLOCKS[1:])}")
        if self.accuracy_level not in INT4_ACCURACY_LEVELS:
            raise ValueError(f"Int4Settings.accuracy_level: got {self.accuracy_level!r}; one of "
                             f"{list(INT4_ACCURACY_LEVELS)}")

    def summary(self) -> str:
        level = f"accuracy level {self.accuracy_level}" if self.accuracy_level else "default accuracy level"
        return f"blocks of {self.block_size}, {'symmetric' if self.symmetric else 'asymmetric'}, {level}"


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
    """`model` with every MatMul of a constant 2-D weight as a `MatMulNBits` node (see the module docstring); a
    block wider than the narrowest such MatMul's input is refused (`check_block`)."""
    check_block(weight_widths(model), settings.block_size)
    with routed_to_debug():  # importing the quantizer calls logging.basicConfig(INFO); it logs every node
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()), bits=4,
                                         block_size=settings.block_size, is_symmetric=settings.symmetric,
                                         accuracy_level=settings.accuracy_level or None)
        quantizer.process()
    return quantizer.model.model


def nbits_nodes(model: onnx.ModelProto) -> int:
    return sum(n.op_type == OP_TYPE for n in model.graph.node)


class MatMulNBits(Technique):
    """int4_block / int4_symmetric / int4_accuracy_level: at 4 bits with a block size, the plan's route becomes
    `MatMulNBits` with these settings (chosen before fine-tuning, applied by `quantize` with the others)."""

    name, knobs, stage, order, keyed = "matmul_nbits", ("int4_block", "int4_symmetric", "int4_accuracy_level"), \
        "graph", 1, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        blocks = [b for b in space.domain("int4_block") if b]
        settings = [v for v in space.domain("int4_symmetric") if v is not True] + \
            [v for v in space.domain("int4_accuracy_level") if v]
        if not blocks:
            if settings:
                name = "int4_symmetric" if False in space.domain("int4_symmetric") else "int4_accuracy_level"
                raise ConfigError(f"knobs.{name}", settings[0], "acts on MatMulNBits files only: give int4_block "
                                  f"one of {list(INT4_BLOCKS[1:])} (and 4 in bits), or remove the knob")
            return Verdict()
        if 4 not in space.bits:
            raise ConfigError("knobs.int4_block", blocks[0], f"acts on 4-bit files only and bits is "
                              f"{list(space.bits)}: add 4 to bits, or set int4_block to 0")
        widths = weight_widths(ctx.graph)
        if not widths:
            raise ConfigError("knobs.int4_block", blocks[0], "MatMulNBits takes MatMul weights and the exported graph "
                              "has none (Conv / Gemm only): set int4_block to 0 (per-channel INT4)")
        check_block(widths, max(blocks))
        verdict = Verdict()
        padded = sorted({b for b in blocks for k in widths.values() if k % b})
        if padded:
            verdict.notes.append(f"int4_block {padded}: some MatMul input widths ({sorted(set(widths.values()))}) "
                                 "are not multiples; ONNX Runtime pads their last block with zeros")
        return verdict

    def plan(self, build: Build) -> None:
        config = build.config
        block, symmetric, level = config.int4_block, config.int4_symmetric, config.int4_accuracy_level
        if block and build.route.bits == 4:  # the plan quantize made from bits
            build.route = build.route.with_settings(Int4Settings(int(block), bool(symmetric), int(level)))


TECHNIQUES = (MatMulNBits(),)
