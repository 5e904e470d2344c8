"""Structured pruning of Transformer encoders: whole attention heads and FFN channels leave the graph.

An encoder layer is found by its layout, so this module needs no `transformers` import. Two layouts are known
(`LAYOUTS`), one small record each:

    BERT family (BERT, MiniLM, RoBERTa, ELECTRA...)     ViT / DeiT in transformers 5
    layer.attention.self.{query,key,value}              layer.attention.{q,k,v}_proj
    layer.attention.output.dense                        layer.attention.o_proj
    layer.intermediate.dense                            layer.mlp.fc1
    layer.output.dense                                  layer.mlp.fc2

Removing head h deletes its rows of query/key/value and its columns of the output projection; removing
FFN channel c deletes row c of the FFN's first Linear and column c of its second. The residual width
(hidden size) is left whole: every LayerNorm, the embeddings and the head keep their shapes. Heads and
channels are ranked by L1 magnitude of all the weights that go with them (the same criterion as
`prune.prune_structured`).

Example:
    >>> from transformers import BertConfig, BertModel  # doctest: +SKIP
    >>> model = BertModel(BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128))  # doctest: +SKIP
    >>> pruned = prune_encoder(model, 0.5)  # doctest: +SKIP
    >>> pruned.encoder.layer[0].attention.self.num_attention_heads  # doctest: +SKIP
    2
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layout:
    """Where one encoder-layer layout keeps the Linears that go with a head or an FFN channel (dotted paths
    from the layer; `head_size`: the attribute of the attention module holding the size of one head)."""

    name: str
    attention: str
    qkv: tuple[str, str, str]
    out: str
    up: str
    down: str
    head_size: str


LAYOUTS = (
    Layout("bert", attention="attention.self", qkv=("query", "key", "value"), out="attention.output.dense",
           up="intermediate.dense", down="output.dense", head_size="attention_head_size"),
    Layout("vit", attention="attention", qkv=("q_proj", "k_proj", "v_proj"), out="attention.o_proj",
           up="mlp.fc1", down="mlp.fc2", head_size="head_dim"),
)


@dataclass(frozen=True)
class EncoderLayerShape:
    """What pruning left in one encoder layer."""

    heads: int
    head_size: int
    ffn_channels: int


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers of a known layout inside `model`, in registration order (empty: none)."""
    return [m for m in model.modules() if layout_of(m) is not None]


def is_transformer(model: nn.Module) -> bool:
    """True when `model` holds encoder layers this module knows how to prune."""
    return bool(encoder_layers(model))


def layout_of(module: nn.Module) -> Layout | None:
    """The layout `module` is an encoder layer of, None when it is none."""
    for layout in LAYOUTS:
        attn = _path(module, layout.attention)
        linears = [_path(attn, name) for name in layout.qkv] + [_path(module, p) for p in (layout.out, layout.up, layout.down)]
        if all(isinstance(lin, nn.Linear) for lin in linears) and isinstance(getattr(attn, layout.head_size, None), int):
            return layout
    return None


def layer_shapes(model: nn.Module) -> list[EncoderLayerShape]:
    return [EncoderLayerShape(_heads(layer), _head_size(layer), _ffn(layer)[0].out_features)
            for layer in encoder_layers(model)]


def head_scores(layer: nn.Module) -> torch.Tensor:
    """L1 magnitude per head: its query/key/value rows (weights and biases) and output-projection columns."""
    size, score = _head_size(layer), torch.zeros(_heads(layer))
    for lin in _qkv(layer):
        rows = lin.weight.detach().abs().sum(dim=1) + (lin.bias.detach().abs() if lin.bias is not None else 0)
        score += rows.view(-1, size).sum(dim=1)
    score += _out(layer).weight.detach().abs().sum(dim=0).view(-1, size).sum(dim=1)
    return score


def ffn_scores(layer: nn.Module) -> torch.Tensor:
    """L1 magnitude per FFN channel: its row of the FFN's first Linear (with bias) and column of its second."""
    up, down = _ffn(layer)
    score = up.weight.detach().abs().sum(dim=1) + down.weight.detach().abs().sum(dim=0)
    return score + (up.bias.detach().abs() if up.bias is not None else 0)


def keep_count(n: int, ratio: float, round_to: int = 1) -> int:
    """How many of `n` units survive pruning `ratio` of them: floor(n * ratio) go, rounded so that a
    multiple of `round_to` stays; never fewer than one unit (or one block of `round_to`)."""
    keep = n - int(n * ratio)
    if round_to > 1:
        keep = keep // round_to * round_to
    return min(n, max(keep, round_to, 1))


def prune_heads(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep only heads `keep` (indices) of `layer`, in place."""
    layout, size = layout_of(layer), _head_size(layer)
    attn = _path(layer, layout.attention)
    keep = keep.sort().values
    channels = (keep[:, None] * size + torch.arange(size)).flatten()
    for name in layout.qkv:
        setattr(attn, name, _slice_linear(getattr(attn, name), out_idx=channels))
    _set_path(layer, layout.out, _slice_linear(_out(layer), in_idx=channels))
    # transformers reshapes with -1 heads, but keeps these for anything that reads them.
    attn.num_attention_heads = len(keep)
    if hasattr(attn, "all_head_size"):
        attn.all_head_size = len(keep) * size


def prune_ffn(layer: nn.Module, keep: torch.Tensor) -> None:
    """Keep only FFN channels `keep` (indices) of `layer`, in place."""
    layout, (up, down) = layout_of(layer), _ffn(layer)
    keep = keep.sort().values
    _set_path(layer, layout.up, _slice_linear(up, out_idx=keep))
    _set_path(layer, layout.down, _slice_linear(down, in_idx=keep))


def prune_encoder(model: nn.Module, ratio: float, round_to: int = 1, *, heads: bool = True,
                  ffn: bool = True) -> nn.Module:
    """A copy of `model` with `ratio` of the attention heads and of the FFN channels of every encoder layer
    removed (the weakest by L1 magnitude); `round_to` > 1 keeps a multiple of that many FFN channels."""
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must lie in [0, 1), got {ratio!r}")
    model = copy.deepcopy(model).eval()
    if ratio == 0:
        return model
    layers = encoder_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no encoder layer of a known layout "
                         f"({', '.join(layout.name for layout in LAYOUTS)}; see prune_transformer.LAYOUTS)")
    for layer in layers:
        if heads:
            n = _heads(layer)
            prune_heads(layer, head_scores(layer).topk(keep_count(n, ratio)).indices)
        if ffn:
            n = _ffn(layer)[0].out_features
            prune_ffn(layer, ffn_scores(layer).topk(keep_count(n, ratio, round_to)).indices)
    return model


def keep_layers(model: nn.Module, n: int) -> nn.Module:
    """`model` (in place) with only its first `n` encoder layers: the top ones leave the graph (dropping the top
    layers of a pretrained BERT costs least accuracy: Sajjad et al., "On the effect of dropping layers of
    pre-trained transformer models", 2023); `config.num_hidden_layers` follows. 0 keeps them all."""
    layers = encoder_layers(model)
    if n <= 0 or n >= len(layers):
        if n > len(layers):
            raise ValueError(f"layers {n} is more than the model's {len(layers)} encoder layers")
        return model
    holder = next(m for m in model.modules() if isinstance(m, nn.ModuleList) and any(x is layers[0] for x in m))
    kept = [layer for layer in holder][:n]
    for name, child in model.named_modules():
        if child is holder:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.ModuleList(kept))
    for m in model.modules():
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = n
    return model


# ---- helpers -------------------------------------------------------------------------------
def _path(module: nn.Module | None, path: str) -> object:
    """`module.a.b` for path "a.b"; None where a step is missing."""
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def _set_path(module: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_path(module, parent) if parent else module, name, value)


def _qkv(layer: nn.Module) -> list[nn.Linear]:
    layout = layout_of(layer)
    return [getattr(_path(layer, layout.attention), name) for name in layout.qkv]


def _out(layer: nn.Module) -> nn.Linear:
    return _path(layer, layout_of(layer).out)


def _ffn(layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    layout = layout_of(layer)
    return _path(layer, layout.up), _path(layer, layout.down)


def _head_size(layer: nn.Module) -> int:
    layout = layout_of(layer)
    return getattr(_path(layer, layout.attention), layout.head_size)


def _heads(layer: nn.Module) -> int:
    return _qkv(layer)[0].out_features // _head_size(layer)


def _slice_linear(lin: nn.Linear, *, out_idx: torch.Tensor | None = None,
                  in_idx: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear holding the rows `out_idx` and columns `in_idx` of `lin` (None: all)."""
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if out_idx is not None:
        w = w[out_idx]
        b = b[out_idx] if b is not None else None
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new
