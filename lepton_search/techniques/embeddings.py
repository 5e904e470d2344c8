"""Embedding tables: the knobs that act on what makes a recommender cost memory (`embedding_dim`, `embedding_bits`).

- `embedding_dim` (share of each table's columns kept, 1.0 = all): the least important columns (L2 norm over
  the table and every weight that reads the column) are removed by torch-pruning's dependency graph with
  `nn.Embedding` as the pruned root, so every layer reading them shrinks with them: the other operand of a
  product (NeuMF's GMF branch), the input columns of the Linear after a concatenation.
- `embedding_bits` (32, 8, 4): every Gather of a constant 2-D float table in the exported graph becomes ONNX
  Runtime's `com.microsoft::GatherBlockQuantized`: the table is stored as UINT8 (8 bits) or two 4-bit values per
  byte (4 bits), with one FP32 scale and one zero point per row (asymmetric row-wise, as Guan et al. 2019); only
  the gathered rows are dequantized, at run time, by the kernel (ONNX Runtime 1.32 runs it on CPU; checked by
  a test). Plain ONNX has no 4-bit Gather: opset 21's `Gather` refuses INT4 tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict

EMBEDDING_BITS = (32, 8, 4)
MS_DOMAIN = "com.microsoft"


def embedding_tables(model: nn.Module) -> list[str]:
    """Names of the model's `nn.Embedding` modules (empty: the embedding knobs cannot act on it)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Embedding)]


def check_embedding_ids(model: nn.Module, inputs: Sequence[Any], xs: Sequence[torch.Tensor], split: str) -> None:
    """A one-line ConfigError when an integer input holds an id outside an `nn.Embedding` it indexes.

    Runs the model once on the rows that hold each integer column's smallest and largest id, with a hook on every
    embedding; cheap, and before any training. Nothing to do for a model without embeddings."""
    from lepton_search.errors import ConfigError

    tables = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    ints = [i for i, x in enumerate(xs) if not torch.is_floating_point(x) and x.dtype != torch.bool and x.numel()]
    if not tables or not ints:
        return
    rows = sorted({int(r) for i in ints for r in (xs[i].reshape(len(xs[i]), -1).max(1).values.argmax(),
                                                  xs[i].reshape(len(xs[i]), -1).min(1).values.argmin())})
    found: list[tuple[str, int, int]] = []

    def hook(name: str, table: nn.Embedding) -> Any:
        def pre(_: nn.Module, args: tuple[Any, ...]) -> None:
            ids = args[0]
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= table.num_embeddings:
                found.append((name, low if low < 0 else high, table.num_embeddings))
                raise _OutOfTable
        return pre

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in tables]
    try:
        with torch.no_grad():
            model.eval()(*(x[rows] for x in xs))
    except _OutOfTable:
        pass
    except Exception:  # noqa: BLE001 - other failures are validate()'s example-input check's to report
        return
    finally:
        for h in handles:
            h.remove()
    if found:
        name, bad, rows_in = found[0]
        col = next((inputs[i].name for i in ints if bad in (int(xs[i].max()), int(xs[i].min()))), "an id input")
        raise ConfigError(f"workload.{split} inputs", f"{col} id {bad}",
                          f"embedding {name!r} has {rows_in} rows (ids 0..{rows_in - 1}): renumber the ids from 0 or "
                          f"size the table nn.Embedding({max(bad + 1, rows_in)}, ...)")


class _OutOfTable(Exception):
    pass


# ---- embedding_dim: structured pruning of table columns ----------------------------------------------
def prune_embedding_dims(model: nn.Module, example_input: Any, keep: float) -> nn.Module:
    """`model` with `1 - keep` of every embedding table's columns removed (least L2 importance first), and every
    layer reading those columns shrunk with them (torch-pruning's dependency graph). In place; returns it."""
    import torch_pruning as tp

    if keep >= 1.0 or not embedding_tables(model):
        return model
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    pruner = tp.pruner.MagnitudePruner(
        model, args, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=1.0 - keep,
        root_module_types=[nn.Embedding], ignored_layers=[],
    )
    pruner.step()
    return model


# ---- embedding_bits: row-wise quantized tables in the ONNX graph ---------------------------------------
def _table_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        t = inits[node.input[0]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if t.data_type == TensorProto.FLOAT and len(t.dims) == 2 and axis == 0:
            out.append(node)
    return out


def row_quantize(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric per-row quantization: w ~= (q - zero_point) * scale, q in [0, 2^bits - 1].

    Returns (q uint8 (rows, dim), scale float32 (rows, 1), zero_point uint8 (rows, 1)).

    Example:
        >>> q, s, z = row_quantize(np.array([[0.0, 1.0, 2.0]], np.float32), 8)
        >>> np.allclose((q.astype(np.float32) - z) * s, [[0, 1, 2]], atol=s.max())
        True
    """
    levels = (1 << bits) - 1
    low = np.minimum(w.min(axis=1, keepdims=True), 0.0)
    high = np.maximum(w.max(axis=1, keepdims=True), 0.0)  # 0 stays exact
    scale = (high - low) / levels
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zero = np.clip(np.round(-low / scale), 0, levels).astype(np.uint8)
    q = np.clip(np.round(w / scale) + zero, 0, levels).astype(np.uint8)
    return q, scale, zero


def quantize_embeddings(model: onnx.ModelProto, bits: int) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with every constant float table read by a Gather stored at `bits` (8 or 4) as a
    `GatherBlockQuantized` (one block = one row); returns it and the tables' names. 32: unchanged."""
    if bits not in EMBEDDING_BITS:
        raise ValueError(f"embedding_bits must be one of {EMBEDDING_BITS}; got {bits!r}")
    if bits == 32:
        return model, []
    model = onnx.ModelProto.FromString(model.SerializeToString())
    gathers = _table_gathers(model)
    inits = {i.name: i for i in model.graph.initializer}
    done: dict[str, tuple[str, str, str, int]] = {}
    for node in gathers:
        name = node.input[0]
        if name not in done:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            q, scale, zero = row_quantize(w, bits)
            if bits == 4:  # two values a byte, low nibble first (the kernel's layout); an odd width pads a column
                q = np.pad(q, ((0, 0), (0, q.shape[1] % 2)))
                q = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
            block = max(16, 1 << (w.shape[1] - 1).bit_length())  # one block per row: a power of 2 >= 16
            stored = [numpy_helper.from_array(q, f"{name}_q{bits}"), numpy_helper.from_array(scale, f"{name}_scale"),
                      numpy_helper.from_array(zero, f"{name}_zero_point")]
            model.graph.initializer.extend(stored)
            done[name] = (*(t.name for t in stored), block, w.shape[1])
        q_name, s_name, z_name, block, dim = done[name]
        padded = bits == 4 and dim % 2 == 1
        out = node.output[0] + "_padded" if padded else node.output[0]
        quantized = helper.make_node("GatherBlockQuantized", [q_name, node.input[1], s_name, z_name], [out],
                                     name=(node.name or name) + f"_q{bits}", domain=MS_DOMAIN, bits=bits,
                                     block_size=block, gather_axis=0, quantize_axis=1)
        node.CopyFrom(quantized)
        if padded:  # the padding column goes again
            for i, v in ((0, 0), (1, dim), (2, -1)):
                model.graph.initializer.append(numpy_helper.from_array(np.array([v], np.int64), f"{out}_slice{i}"))
            model.graph.node.append(helper.make_node("Slice", [out, f"{out}_slice0", f"{out}_slice1", f"{out}_slice2"],
                                                     [out.removesuffix("_padded")], name=f"{out}_slice"))
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    if done and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model, sorted(done)


EMBEDDING_KNOBS = {"embedding_bits": 32, "embedding_dim": 1.0}  # knob -> its no-op value


def refuse_without_tables(model: nn.Module, values: dict[str, Any]) -> None:
    """A one-line ConfigError naming the knob when an embedding knob is set off its no-op (`values`: knob -> the
    values a space or a call gives it) on a model with no `nn.Embedding`: it could change nothing."""
    from lepton_search.errors import ConfigError

    if embedding_tables(model):
        return
    for knob, noop in EMBEDDING_KNOBS.items():
        active = [v for v in values.get(knob, [noop]) if v != noop]
        if active:
            raise ConfigError(knob, active[0] if len(active) == 1 else active,
                              f"this model has no nn.Embedding for it to act on; remove {knob} (or set it to {noop})")


class EmbeddingDim(Technique):
    """embedding_dim: each table keeps this share of its columns; what reads them shrinks with them (module stage,
    before pruning: a torch-pruning graph of the plain model)."""

    name, knobs, stage, order = "embedding_dim", ("embedding_dim",), "module", 0

    def changes_model(self, config: CompressionConfig) -> bool:
        return config.embedding_dim < 1.0

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        refuse_without_tables(ctx.workload.model, {"embedding_dim": space.domain("embedding_dim")})
        return Verdict()

    def apply(self, build: Build) -> None:
        if build.config.embedding_dim < 1.0:
            build.model = prune_embedding_dims(build.own(), build.example, build.config.embedding_dim)


class EmbeddingBits(Technique):
    """embedding_bits: constant tables of the exported graph stored row-wise UINT8 / 4-bit (`GatherBlockQuantized`);
    a graph-only change, so trials that differ only here share their fine-tuned student."""

    name, knobs, stage, order, keyed = "embedding_bits", ("embedding_bits",), "graph", 20, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        refuse_without_tables(ctx.workload.model, {"embedding_bits": space.domain("embedding_bits")})
        return Verdict()

    def apply(self, build: Build) -> None:
        build.graph, tables = quantize_embeddings(build.graph, build.config.embedding_bits)
        build.record.update(embedding_bits=build.config.embedding_bits, embedding_tables=tables)


TECHNIQUES = (EmbeddingDim(), EmbeddingBits())
