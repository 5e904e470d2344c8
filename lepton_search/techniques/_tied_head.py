"""A tied embedding and LM head stored once, 8-bit in blocks (`quantize_tied_head`): the LM head MatMul becomes
`com.microsoft::MatMulNBits` (bits 8, symmetric: zero point 128 implied), and the embedding `Gather` a
`GatherBlockQuantized` reading the same bytes and scales (through a Reshape), as ONNX Runtime GenAI's model builder
shares them at 4 bits. Symmetric 8-bit blocks of 32 from each block's absolute max are GGUF Q8_0's grid (the
SmolLM2 file's `token_embd`), re-made exactly.

The exported FP32 graph holds the table twice (the Gather's [vocab, hidden] and the LM head's constant-folded
transpose); both go. The model builder's FP32 graph holds it once, as the LM head's [hidden, vocab] weight, the
embedding a Gather of its `Transpose`; the Transpose goes too. Written by hand: ONNX Runtime's quantizers neither tie the two nor make 8-bit blocks.

Example:
    >>> q, scale = absmax_blocks(np.array([[0.5, -1.0, 0.25, 0.0]], np.float32), 2)
    >>> q.tolist(), scale.tolist()
    ([[[192, 1], [255, 128]]], [[0.007874015718698502, 0.0019685039296746254]])
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lepton_search.errors import ConfigError

LIMIT, ZERO = 127, 128  # 8-bit symmetric: q in -127..127, stored as q + 128 (MatMulNBits' implied zero point)


def absmax_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """A [rows, width] table (width a multiple of `block`) as (q + 128 [rows, blocks, block] uint8, scale [rows,
    blocks]), each block's scale its absolute max over 127."""
    rows, width = table.shape
    blocks = table.reshape(rows, width // block, block).astype(np.float32)
    scale = (np.abs(blocks).max(-1) / LIMIT).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)[..., None]
    q = np.clip(np.rint(blocks / safe), -LIMIT, LIMIT)
    return (q + ZERO).astype(np.uint8), scale


def tied_pair(graph: onnx.GraphProto, block: int) -> tuple[onnx.NodeProto, onnx.NodeProto | None, np.ndarray,
                                                              onnx.NodeProto] | None:
    """(embedding Gather, the Transpose it reads or None, the [vocab, width] table, LM head MatMul) where the graph
    ties them (the head's constant weight is the table's transpose) at a width that is a multiple of `block`."""
    gather, transpose, table = _embedding(graph, block)
    weight = transpose.input[0] if transpose is not None else None
    inits = {i.name: i for i in graph.initializer}
    head = next((n for n in graph.node if table is not None and n.op_type == "MatMul" and n.input[1] in inits
                 and (n.input[1] == weight or tuple(inits[n.input[1]].dims) == table.shape[::-1]
                      and np.array_equal(numpy_helper.to_array(inits[n.input[1]]), table.T))), None)
    return None if head is None else (gather, transpose, table, head)


def quantize_tied_head(model: onnx.ModelProto, *, block: int = 32, accuracy_level: int = 4) -> onnx.ModelProto:
    """A copy of `model` whose embedding Gather and LM head MatMul (a constant weight equal to the table's transpose)
    read one 8-bit table (see the module docstring); refused in one line where the graph has no such pair."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    pair = tied_pair(graph, block)
    if pair is None:
        raise ConfigError("model", graph.name or "graph", f"has no embedding Gather tied to an LM head MatMul with a "
                          f"width a multiple of {block}: quantize the head with the other MatMuls instead")
    gather, transpose, table, head = pair
    vocab, width = table.shape
    q, scale = absmax_blocks(table, block)
    name = "tied_embedding"
    graph.initializer.extend([
        numpy_helper.from_array(q, f"{name}_Q8"), numpy_helper.from_array(scale, f"{name}_scales"),
        numpy_helper.from_array(np.array([vocab, width], np.int64), f"{name}_shape"),
        numpy_helper.from_array(np.full((vocab, width // block), ZERO, np.uint8), f"{name}_zero_points")])
    nodes = []
    for node in graph.node:
        if node is gather:
            nodes += [helper.make_node("Reshape", [f"{name}_Q8", f"{name}_shape"], [f"{name}_rows"], name=f"{name}_Reshape"),
                      helper.make_node("GatherBlockQuantized", [f"{name}_rows", node.input[1], f"{name}_scales",
                                       f"{name}_zero_points"], list(node.output), name=f"{name}_Gather",
                                       domain="com.microsoft", bits=8, block_size=block, gather_axis=0, quantize_axis=1)]
        elif node is transpose:
            continue
        elif node is head:
            nodes.append(helper.make_node("MatMulNBits", [node.input[0], f"{name}_Q8", f"{name}_scales"],
                                          list(node.output), name=f"{name}_LMHead", domain="com.microsoft", K=width,
                                          N=vocab, bits=8, block_size=block, accuracy_level=accuracy_level))
        else:
            nodes.append(node)
    read = {name for node in nodes for name in node.input}  # the FP32 table goes unless another node reads it
    kept = [i for i in graph.initializer if i.name not in {gather.input[0], head.input[1]} - read]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _embedding(graph: onnx.GraphProto, block: int) -> tuple[onnx.NodeProto | None, onnx.NodeProto | None,
                                                             np.ndarray | None]:
    """(the embedding Gather, the Transpose feeding it or None, its [vocab, width] table): the first Gather of a
    2-D constant, or of a 2-D constant's Transpose (perm [1, 0]: the builder's tied table), width a multiple of
    `block`."""
    inits = {i.name: i for i in graph.initializer}
    transposes = {n.output[0]: n for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits
                  and len(inits[n.input[0]].dims) == 2
                  and [list(a.ints) for a in n.attribute if a.name == "perm"] in ([], [[1, 0]])}
    for node in graph.node:
        if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        source, transpose = node.input[0], transposes.get(node.input[0])
        if transpose is not None:
            table = numpy_helper.to_array(inits[transpose.input[0]]).T
        elif source in inits and len(inits[source].dims) == 2:
            table = numpy_helper.to_array(inits[source])
        else:
            continue
        if table.shape[1] % block == 0:
            return node, transpose, np.ascontiguousarray(table)
    return None, None, None
