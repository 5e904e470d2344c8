"""Weight sharing (the `weight_clusters` knob): every Conv/Linear weight takes one of k shared values per layer.

After Deep Compression (Han, Mao and Dally, ICLR 2016, section 3): k-means on each layer's weights, the centroids
first spread linearly over [min, max] (the paper's best initialisation: it keeps the few large weights), then
fine-tuning trains the k centroids while every weight keeps its cluster (a centroid's gradient: its members' mean,
where the paper sums them with a rate of its own; see `SharedWeight`). The exported file stores each weight as an index into a codebook.

- `cluster(model, k, seed=)`: the weight of each layer becomes `centroids[indices]` (a `SharedWeight`
  parametrization): an optimizer made later from `model.parameters()` trains the centroids, the original weight is
  kept frozen (requires_grad False); `copy.deepcopy` and `state_dict` / `load_state_dict` work.
- `bake(model)`: plain weights again, each layer holding at most k distinct values.
- `encode_graph(graph, k)`: each constant Conv/Gemm/MatMul weight whose values come from at most k shared values
  becomes a codebook (float32) and indices (UINT4 for k <= 16, two a byte, opset 21; UINT8 up to 256), rebuilt by
  `Cast(indices -> int64) -> Gather(codebook)`. The exporter folds BatchNorm into the convolution, which scales
  each output channel; such a weight is found as codebook x per-channel scale and rebuilt with one more `Mul`.
  An FP16 weight (`bits: 16`) is rebuilt in float32 and cast back to FP16 for the Cast that follows it.
- What ONNX Runtime does with it: the Cast, Gather and Mul read only initializers, so constant folding (every
  graph optimization level from basic on; the engine times at ORT_ENABLE_ALL) computes the FP32 weight once at
  session creation (`SessionOptions.optimized_model_filepath` shows the plain Conv with an FP32 initializer): the
  session holds FP32 weights and runs FP32 kernels, so latency and memory equal the FP32 file's; only the file
  (disk, download) shrinks. ONNX Runtime 1.32 casts UINT4 on CPU and folds it (a `DequantizeLinear` would not be
  folded, so the indices are not dequantized).
- `check(domains)`: with bits 8 or 4 the quantizer would put the shared values on its own grid and the file would
  hold no codebook: refused in one line (search bits [32] or [32, 16] with it).

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 32))
    >>> info = cluster(model, 16, seed=0)
    >>> info.layers, int(model[0].weight.unique().numel()) <= 16
    (('0',), True)
    >>> _ = bake(model)
    >>> type(model[0].weight).__name__
    'Parameter'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from lepton_search.errors import ConfigError
from lepton_search.logging import stage
from lepton_search.space import SearchSpace
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict

__all__ = ["LAYERS", "ClusterInfo", "EncodeInfo", "SharedWeight", "bake", "check", "cluster", "clusters_of",
           "encode_graph", "file_clusters", "kmeans"]

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # whose `weight` is clustered
WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}  # op type -> input index of its weight


@dataclass(frozen=True)
class ClusterInfo:
    """What `cluster` did: k, the layers clustered, those left whole (fewer than k weights), and the mean squared
    error of the shared weights against the originals (over all clustered weights)."""

    k: int
    layers: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    mse: float = 0.0


@dataclass(frozen=True)
class EncodeInfo:
    """What `encode_graph` did: the weights stored as codebook + indices, those with a per-channel scale (a folded
    BatchNorm), the index type, and the bytes of those weights before and after."""

    k: int
    weights: tuple[str, ...] = ()
    scaled: tuple[str, ...] = ()
    index_type: str = ""
    bytes_before: int = 0
    bytes_after: int = 0


class SharedWeight(nn.Module):
    """weight = centroids[indices]: k trainable values, a fixed index per weight (a uint8 buffer for k <= 256).

    A centroid's gradient is its members' summed (Deep Compression) divided by their count: the fine-tuning rate is
    the one the network's other weights take, and with the sum each step moved a centroid by its cluster's size
    times a weight's step (digits-mlp, SGD at 0.005, batches of 16: 97% to 10% validation accuracy in one epoch)."""

    def __init__(self, centroids: torch.Tensor, indices: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().clone())
        self.register_buffer("indices", indices.to(torch.uint8 if len(centroids) <= 256 else torch.int32))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        idx = self.indices.long()
        share = 1.0 / torch.bincount(idx.flatten(), minlength=len(self.centroids)).clamp_min(1).to(original.dtype)
        c = self.centroids
        return (c * share + (c - c * share).detach())[idx]  # the centroids' values; their members' mean gradient


def clusters_of(config: Any) -> int:
    """The shared values per layer `config.weight_clusters` asks for (0: off): what `cluster` takes."""
    return int(config.weight_clusters)


def file_clusters(config: Any) -> int:
    """What `encode_graph` takes for `config`: its clusters in an FP32/FP16 file, 0 at bits 8/4 (the quantizer
    owns those weights; `check` refuses the pair)."""
    return clusters_of(config) if config.bits in (32, 16) else 0


def kmeans(values: torch.Tensor, k: int, *, iters: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the entries of `values`, centroids first spread linearly over [min, max].

    Vectorised in 1-D: centroids kept sorted, each value goes to the nearest by bucketing the midpoints; an empty
    cluster moves to a value drawn at random (`seed`). Returns (centroids (k,), indices shaped as `values`).

    Example:
        >>> c, i = kmeans(torch.tensor([0.0, 0.1, 1.0, 1.1]), 2)
        >>> [round(v, 2) for v in c.tolist()], i.tolist()
        ([0.05, 1.05], [0, 0, 1, 1])
    """
    x = values.detach().flatten().double()
    gen = torch.Generator().manual_seed(seed)
    c = torch.linspace(float(x.min()), float(x.max()), k, dtype=torch.float64)
    for _ in range(iters):
        idx = torch.bucketize(x, (c[1:] + c[:-1]) / 2)
        counts = torch.bincount(idx, minlength=k)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, idx, x)
        empty = counts == 0
        moved = x[torch.randint(len(x), (int(empty.sum()),), generator=gen)]
        new = torch.where(empty, c, sums / counts.clamp_min(1))
        new[empty] = moved
        new = new.sort().values
        if torch.equal(new, c):
            break
        c = new
    idx = torch.bucketize(x, (c[1:] + c[:-1]) / 2)
    return c.to(values.dtype), idx.view(values.shape)


def cluster(model: nn.Module, k: int, *, seed: int = 0) -> ClusterInfo:
    """Share k values in each Conv/Linear weight of `model`, in place (k-means per layer, `SharedWeight`).

    Layers with fewer than k weights stay as they are (`ClusterInfo.skipped`). k = 0 does nothing."""
    if k == 0:
        return ClusterInfo(0)
    if not 2 <= k <= 65536:
        raise ValueError(f"weight_clusters must be 0 or 2..65536 shared values; got {k!r}")
    done, skipped, sq, n = [], [], 0.0, 0
    for name, layer in model.named_modules():
        if not isinstance(layer, LAYERS) or parametrize.is_parametrized(layer, "weight"):
            continue
        w = layer.weight
        if w.numel() < k:
            skipped.append(name)
            continue
        centroids, indices = kmeans(w, k, seed=seed)
        parametrize.register_parametrization(layer, "weight", SharedWeight(centroids, indices))
        layer.parametrizations.weight.original.requires_grad_(False)  # kept for reference, never trained
        with torch.no_grad():
            sq += float(((layer.weight - w) ** 2).sum())
        n += w.numel()
        done.append(name)
    return ClusterInfo(k, tuple(done), tuple(skipped), sq / max(n, 1))


def bake(model: nn.Module) -> nn.Module:
    """`model` with every `SharedWeight` replaced by the plain weight it gives (in place; returned)."""
    for layer in model.modules():
        if parametrize.is_parametrized(layer, "weight") and any(
                isinstance(p, SharedWeight) for p in layer.parametrizations.weight):
            # A class of its own first: copy.deepcopy shares the class parametrize made, and removing deletes the
            # `weight` property from that class, which would strip it from the other copy too (torch 2.14).
            cls = type(layer)
            layer.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer.weight.requires_grad_(True)
    return model


def check(space_domains: Mapping[str, Sequence[Any]]) -> list[str]:
    """Refuse what weight sharing cannot do in a space (knob -> the values searched); return warning notes.

    bits 8 or 4 beside weight_clusters is refused: the quantizer re-grids the shared values and the file would hold
    no codebook. A space that never fine-tunes gets a note: the centroids stay as k-means left them."""
    shared = [v for v in space_domains.get("weight_clusters", [0]) if v]
    if not shared:
        return []
    low = [b for b in space_domains.get("bits", [32]) if b in (8, 4)]
    if low:
        raise ConfigError("weight_clusters", shared[0] if len(shared) == 1 else shared,
                          f"acts on FP32/FP16 files, but bits {low} would re-grid the shared values (no codebook in "
                          "the file); search bits [32] or [32, 16] with it, INT8/INT4 in another study")
    if "unstructured" in space_domains.get("prune_method", []):
        raise ConfigError("weight_clusters", shared[0] if len(shared) == 1 else shared,
                          "is not combined with prune_method 'unstructured' (NNCF's masks and the shared centroids "
                          "both hook the weight); use 'structured' or 'global' with it")
    if max(space_domains.get("finetune_epochs", [0])) == 0:
        note = ("weight_clusters without fine-tuning: the centroids stay where k-means put them (Deep Compression "
                "retrains them); add finetune_epochs >= 1")
        return [note]
    return []


# ---- the exported graph: codebook + indices --------------------------------------------------------
def _weights(graph: onnx.GraphProto) -> dict[str, tuple[onnx.NodeProto, int]]:
    """Float initializers read as a Conv/Gemm/MatMul weight (directly, or through the Cast of an FP16 file) ->
    (the reading node, the axis of its output channels)."""
    inits = {i.name: i for i in graph.initializer}
    casts = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and n.input[0] in inits}
    found = {}
    for node in graph.node:
        idx = WEIGHT_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = casts.get(node.input[idx], node.input[idx])
        if name in inits and inits[name].data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            found[name] = (node, _out_axis(node, len(inits[name].dims)))
    return found


def _out_axis(node: onnx.NodeProto, ndim: int) -> int:
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    return ndim - 1 if node.op_type == "MatMul" else 0


def _shared(w: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(codebook, indices, per-channel scale or None) with w ~= codebook[indices] (* scale along `axis`), or None
    when `w` is not made of at most k shared values."""
    values, inverse = np.unique(w, return_inverse=True)
    if len(values) <= k:
        return values.astype(np.float32), inverse.reshape(w.shape), None
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    found = _per_channel(rows, k)
    if found is None:
        return None
    book, idx, scale = found
    idx = np.moveaxis(idx.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)
    shape = [1] * w.ndim
    shape[axis] = -1
    rebuilt = book.astype(np.float32)[idx] * scale.astype(np.float32).reshape(shape)
    if not np.allclose(rebuilt, w, rtol=1e-5, atol=1e-7 * float(np.abs(w).max())):
        return None
    return book.astype(np.float32), idx, scale.astype(np.float32).reshape(shape)


def _per_channel(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One codebook of <= k values and a scale per row with rows[o] ~= book[idx[o]] * scale[o] (a BatchNorm folded
    into a shared weight), found by matching each row's values to the codebook at the ratio that fits most."""
    uniques = [np.unique(r, return_inverse=True) for r in rows]
    if max(len(u) for u, _ in uniques) > k:
        return None
    order = sorted(range(len(rows)), key=lambda o: -len(uniques[o][0]))
    book = uniques[order[0]][0]
    scale, idx = np.ones(len(rows)), np.zeros(rows.shape, np.int64)
    for o in order:
        u, inv = uniques[o]
        if not np.any(u):
            scale[o], idx[o] = 0.0, 0
            continue
        s, where, hit = _fit(u, book)
        new = u[~hit] / s
        if len(book) + len(new) > k:
            return None
        where[~hit] = len(book) + np.arange(len(new))
        book = np.concatenate([book, new])
        scale[o], idx[o] = s, where[inv]
    return book, idx, scale


def _fit(u: np.ndarray, book: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The scale s with the most of `u / s` in `book`, tried at once for every (value of `u`, entry of `book`)
    ratio, the largest values of `u` as anchors: (s, index of each value in `book`, which values were found)."""
    anchors = u[np.argsort(-np.abs(u))][:max(4, 4096 // len(book))]
    scales = (anchors[anchors != 0][:, None] / book[book != 0][None, :]).ravel()
    if not len(scales):
        return 1.0, np.zeros(len(u), np.int64), np.zeros(len(u), bool)
    order = np.argsort(book)
    ranked = np.concatenate([[-np.inf], book[order], [np.inf]])
    v = u[None, :] / scales[:, None]
    pos = np.searchsorted(ranked, v)
    near = np.where(np.abs(ranked[pos - 1] - v) < np.abs(ranked[pos] - v), pos - 1, pos)
    hit = np.abs(ranked[near] - v) <= 1e-5 * np.abs(v) + 1e-12
    best = int(hit.sum(1).argmax())
    return float(scales[best]), order[near[best] - 1], hit[best]


def _indices(name: str, idx: np.ndarray, k: int) -> TensorProto:
    if k <= 16:  # two a byte, the first in the low nibble (ONNX's packing)
        flat = np.append(idx.ravel(), [0] * (idx.size % 2)).astype(np.uint8)
        packed = flat[0::2] | (flat[1::2] << 4)
        return helper.make_tensor(name, TensorProto.UINT4, idx.shape, packed.tobytes(), raw=True)
    return numpy_helper.from_array(idx.astype(np.uint8 if k <= 256 else np.uint16), name)


def encode_graph(model: onnx.ModelProto, k: int) -> tuple[onnx.ModelProto, EncodeInfo]:
    """`model` with each weight made of at most k shared values stored as codebook + indices (see the module
    docstring), where that makes the file smaller; k = 0 returns it unchanged.

    Example (k = 16 stores a half-byte index per weight):
        >>> w = np.repeat(np.linspace(-1, 1, 16, dtype=np.float32), 64).reshape(32, 32)
        >>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [numpy_helper.from_array(w, "w")])
        >>> _, info = encode_graph(helper.make_model(g), 16)
        >>> info.weights, info.index_type, info.bytes_before, info.bytes_after
        (('w',), 'uint4', 4096, 614)
    """
    if k == 0:
        return model, EncodeInfo(0)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done, scaled, before, after, nodes, drop = [], [], 0, 0, [], set()
    for name, (_, axis) in _weights(graph).items():
        w = numpy_helper.to_array(inits[name])
        found = _shared(w.astype(np.float32), k, axis)
        if found is None:
            continue
        book, idx, scale = found
        stored = [numpy_helper.from_array(book, f"{name}_codebook"), _indices(f"{name}_indices", idx, k)]
        stored += [] if scale is None else [numpy_helper.from_array(scale, f"{name}_scale")]
        size = sum(len(t.SerializeToString()) for t in stored)
        if size >= w.nbytes:
            continue
        fp16 = inits[name].data_type == TensorProto.FLOAT16
        steps = [("Gather", [stored[0].name]), *([("Mul", [stored[2].name])] if scale is not None else [])]
        nodes.append(helper.make_node("Cast", [stored[1].name], [f"{name}_idx64"], to=TensorProto.INT64,
                                      name=f"{name}_cast_indices"))
        last = f"{name}_idx64"
        for i, (op, args) in enumerate(steps):
            out = name if i == len(steps) - 1 and not fp16 else f"{name}_{op.lower()}"
            nodes.append(helper.make_node(op, [*args, last] if op == "Gather" else [last, *args], [out],
                                          name=f"{name}_{op.lower()}"))
            last = out
        if fp16:  # the Cast after it still reads FP16
            nodes.append(helper.make_node("Cast", [last], [name], to=TensorProto.FLOAT16, name=f"{name}_to_fp16"))
        graph.initializer.extend(stored)
        drop.add(name)
        done.append(name)
        scaled += [name] if scale is not None else []
        before, after = before + w.nbytes, after + size
    kept = [i for i in graph.initializer if i.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)  # the rebuilt weights first keeps the order topological
    if done and k <= 16:  # UINT4 needs opset 21 (the exporter's ops keep their meaning there) and IR 10
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = max(imp.version, 21)
        model.ir_version = max(model.ir_version, 10)
    index_type = ("uint4" if k <= 16 else "uint8" if k <= 256 else "uint16") if done else ""
    return model, EncodeInfo(k, tuple(done), tuple(scaled), index_type, before, after)


class WeightSharing(Technique):
    """weight_clusters: clustered after pruning (module stage, so the student fine-tunes its centroids), baked after
    training, encoded as codebook + indices before the graph stage (`before_graph`: ahead of `quantize`, so at 16
    bits FP16 takes only what is not in a codebook)."""

    name, knobs, stage, order = "weight_sharing", ("weight_clusters",), "module", 30

    def changes_model(self, config: Any) -> bool:
        return bool(config.weight_clusters)

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        domains = {k: space.domain(k) for k in ("weight_clusters", "bits", "prune_method", "finetune_epochs")}
        return Verdict(notes=check(domains))

    def apply(self, build: Build) -> None:
        k = clusters_of(build.config)
        if k:
            with stage(f"share weights ({k} values a layer, k-means)"):
                cluster(build.own(), k, seed=build.seed)

    def after_training(self, build: Build) -> None:
        bake(build.model)

    def before_graph(self, build: Build) -> None:
        k = file_clusters(build.config)
        build.graph, info = encode_graph(build.graph, k)
        if k:
            build.record.update(weight_clusters=k, codebook_weights=len(info.weights), index_type=info.index_type,
                                codebook_bytes_saved=info.bytes_before - info.bytes_after)


TECHNIQUES = (WeightSharing(),)
