"""INT4 blocks with a float offset (`Int4Settings.zero_point == "float"`): each block of `block_size` input rows of a
weight column is quantized from its own min/max, w ~= scale * q + offset (q in 0..15; scale and offset FP32), the
grid a GGUF Q4_1 file holds (a weight already on it comes back exactly).

Written by hand with numpy because ONNX Runtime's quantizer (`MatMulNBitsQuantizer`) stores integer 4-bit zero points
only. The spec of `com.microsoft::MatMulNBits` allows float `zero_points`, and ONNX Runtime 1.32's CPU kernel runs
them, but by dequantizing the whole weight on every call (measured ~70x slower than uint8 zero points on a 576x1536
weight, at accuracy levels 0 and 4). So the grid is split into what the fast kernel runs and a small exact rest:

    w = scale * (q - 8) + (offset + 8 * scale)
    x @ W = MatMulNBits(x; q, scale, no zero point: 8)  +  (x @ E) @ C

where E [K, blocks] is 1 where row k lies in block b (x @ E: each block's sum of the activations, one per distinct
input) and C [blocks, N] = offset + 8 * scale, FP32 (one value per block per column: 1 bit a weight more than
symmetric INT4).

Example:
    >>> w = (np.arange(64) % 16 * 0.5 - 1.0).astype(np.float32).reshape(64, 1)  # on a 4-bit grid already
    >>> q, scale, offset = block_min_max(w, 32)
    >>> np.allclose(scale[:, :, None] * q + offset[:, :, None], w.T.reshape(1, 2, 32))
    True
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

LEVELS = 15  # 4 bits: q in 0..15
MIDDLE = 8  # the zero point MatMulNBits implies when none is given


def block_min_max(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A [K, N] weight as (q [N, blocks, block] uint8, scale [N, blocks], offset [N, blocks]), blocks along K from
    each block's min/max; a last block past K is padded with q 0 (its rows meet no activations)."""
    k, n = w.shape
    blocks = -(-k // block)
    cols = np.zeros((n, blocks * block), dtype=np.float32)
    cols[:, :k] = w.T
    cols = cols.reshape(n, blocks, block)
    valid = (np.arange(blocks * block) < k).reshape(blocks, block)
    low = np.where(valid, cols, np.inf).min(-1)
    high = np.where(valid, cols, -np.inf).max(-1)
    scale = ((high - low) / LEVELS).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)[..., None]  # a flat block: q 0, the offset holds it exactly
    q = np.clip(np.rint((cols - low[..., None]) / safe), 0, LEVELS)
    return np.where(valid, q, 0).astype(np.uint8), scale, low.astype(np.float32)


def pack(q: np.ndarray) -> np.ndarray:
    """[N, blocks, block] values 0..15 as MatMulNBits' B: two to a byte, the even element in the low nibble."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def block_indicator(k: int, block: int) -> np.ndarray:
    """E [K, blocks]: 1 where input row k lies in block b."""
    blocks = -(-k // block)
    return (np.arange(k)[:, None] // block == np.arange(blocks)[None, :]).astype(np.float32)


def quantize_offset(model: onnx.ModelProto, block: int, accuracy_level: int) -> onnx.ModelProto:
    """A copy of `model` with every MatMul of a constant 2-D weight as MatMulNBits (symmetric storage of the
    min/max grid) plus its block-sum correction (see the module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, added, sums = [], [], {}
    for node in graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        x, y, name = node.input[0], node.output[0], node.name or node.output[0]
        k, n = (int(d) for d in weight.dims)
        q, scale, offset = block_min_max(numpy_helper.to_array(weight).astype(np.float32), block)
        added += [numpy_helper.from_array(pack(q), f"{name}_Q4"), numpy_helper.from_array(scale.ravel(), f"{name}_scales"),
                  numpy_helper.from_array((offset + MIDDLE * scale).T.copy(), f"{name}_offsets")]
        if (x, k) not in sums:  # one block sum an input (q, k and v share theirs)
            sums[x, k] = f"{x}_block_sums_{block}"
            added.append(numpy_helper.from_array(block_indicator(k, block), f"{sums[x, k]}_E"))
            nodes.append(helper.make_node("MatMul", [x, f"{sums[x, k]}_E"], [sums[x, k]], name=f"{sums[x, k]}_MatMul"))
        nodes += [
            helper.make_node("MatMulNBits", [x, f"{name}_Q4", f"{name}_scales"], [f"{y}_grid"], name=f"{name}_Q4",
                             domain="com.microsoft", K=k, N=n, bits=4, block_size=block, accuracy_level=accuracy_level),
            helper.make_node("MatMul", [sums[x, k], f"{name}_offsets"], [f"{y}_offset"], name=f"{name}_offset"),
            helper.make_node("Add", [f"{y}_grid", f"{y}_offset"], [y], name=f"{name}_Add"),
        ]
    used = {o.name for o in graph.output} | {name for node in nodes for name in _inputs(node)}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + added)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _inputs(node: onnx.NodeProto) -> set[str]:
    """The names `node` reads, those its subgraphs (If / Loop bodies) read included."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            names |= {name for inner in sub.node for name in _inputs(inner)}
    return names
