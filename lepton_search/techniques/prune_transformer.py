"""Structured pruning of Transformer blocks: whole attention heads, MLP channels and top layers leave the graph.

Every block is read through its family record (`families.Family`: BERT, DistilBERT, ViT, GPT-2, Llama), so this
module needs no `transformers` import and names no architecture.

- **Heads** go by key/value group: a group is one key/value head and the query heads that read it (one query
  head where there is no grouped-query attention). Removing group g deletes its query heads' rows of q, its rows
  of k and v and its query heads' columns of the output projection. A ratio is applied to the groups and rounded
  down to whole groups removed (`keep_count`): a Llama with 2 key/value groups loses a group at ratio >= 0.5 and
  none below. The query heads per group (Llama's `num_key_value_groups`) and the head size are unchanged.
- **MLP channels**: removing channel c deletes row c of the up projection (and of the gate, for a gated MLP) and
  column c of the down projection.
- **Layers** (`keep_layers`): the top blocks leave; `config.num_hidden_layers` follows.

The residual width (hidden size) is left whole: every LayerNorm, the embeddings and the head keep their shapes.
Units are ranked by L1 magnitude of all the weights that go with them (the same criterion as
`prune.prune_structured`). GPT-2's `Conv1D` holds its weight transposed ((in, out)): it is sliced as such.
Model configs are not written (one config object is shared by every layer; forward reads the modules'
attributes), except `num_hidden_layers` when layers go.

Example:
    >>> from transformers import BertConfig, BertModel  # doctest: +SKIP
    >>> model = BertModel(BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128))  # doctest: +SKIP
    >>> pruned = prune_encoder(model, 0.5)  # doctest: +SKIP
    >>> pruned.encoder.layer[0].attention.self.num_attention_heads  # doctest: +SKIP
    2
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from lepton_search.techniques import families
from lepton_search.techniques.families import Family, path, set_path


@dataclass(frozen=True)
class BlockShape:
    """What pruning left in one block; `kv_heads` None: one key/value head per query head."""

    heads: int
    head_size: int
    ffn_channels: int
    kv_heads: int | None = None


EncoderLayerShape = BlockShape  # its name before decoders had records


def layer_shapes(model: nn.Module) -> list[BlockShape]:
    return [block_shape(block, fam) for _, block, fam in families.named_blocks(model)]


def block_shape(block: nn.Module, family: Family | None = None) -> BlockShape:
    fam = family or _family(block)
    heads, kv, size = attention_shape(block, fam)
    return BlockShape(heads, size, _out_features(path(block, fam.up)), kv if kv != heads else None)


def attention_shape(block: nn.Module, family: Family | None = None) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) of `block`, read off its weights and head-size attribute."""
    fam = family or _family(block)
    size = getattr(path(block, fam.attention), fam.head_size)
    if fam.fused_qkv:
        width = _out_features(path(block, fam.qkv[0])) // 3
        return width // size, width // size, size
    q, k, _ = (_out_features(path(block, p)) for p in fam.qkv)
    return q // size, k // size, size


# ---- ranking ----------------------------------------------------------------------------------
def head_scores(layer: nn.Module, family: Family | None = None) -> torch.Tensor:
    """L1 magnitude per key/value group (per head without grouped-query attention): its query heads' q rows,
    its k and v rows (weights and biases) and its query heads' output-projection columns."""
    fam = family or _family(layer)
    heads, kv, size = attention_shape(layer, fam)
    per_q = torch.zeros(heads)
    per_kv = torch.zeros(kv)
    for part, rows in zip("qkv", _qkv_row_l1(layer, fam)):
        target = per_q if part == "q" else per_kv
        target += rows.view(-1, size).sum(dim=1)
    per_q += _rows(path(layer, fam.o)).abs().sum(dim=0).view(-1, size).sum(dim=1)
    return per_kv + per_q.view(kv, heads // kv).sum(dim=1)


def ffn_scores(layer: nn.Module, family: Family | None = None) -> torch.Tensor:
    """L1 magnitude per MLP channel: its row of the up projection (and gate; with biases) and column of down."""
    fam = family or _family(layer)
    score = _rows(path(layer, fam.down)).abs().sum(dim=0)
    for p in (fam.up, fam.gate):
        if p:
            score = score + _row_l1(path(layer, p))
    return score


def keep_count(n: int, ratio: float, round_to: int = 1) -> int:
    """How many of `n` units survive pruning `ratio` of them: floor(n * ratio) go, rounded so that a
    multiple of `round_to` stays; never fewer than one unit (or one block of `round_to`)."""
    keep = n - int(n * ratio)
    if round_to > 1:
        keep = keep // round_to * round_to
    return min(n, max(keep, round_to, 1))


# ---- pruning ----------------------------------------------------------------------------------
def prune_heads(layer: nn.Module, keep: torch.Tensor, family: Family | None = None) -> None:
    """Keep only key/value groups `keep` (indices; heads without grouped-query attention) of `layer`, in place."""
    fam = family or _family(layer)
    heads, kv, size = attention_shape(layer, fam)
    per_group = heads // kv
    keep = keep.sort().values
    kv_ch = _channels(keep, size)
    q_ch = _channels((keep[:, None] * per_group + torch.arange(per_group)).flatten(), size)
    if fam.fused_qkv:  # q | k | v side by side, each `heads * size` wide
        width = heads * size
        fused = torch.cat([q_ch, kv_ch + width, kv_ch + 2 * width])
        set_path(layer, fam.qkv[0], _slice(path(layer, fam.qkv[0]), out_idx=fused))
    else:
        for p, ch in zip(fam.qkv, (q_ch, kv_ch, kv_ch)):
            set_path(layer, p, _slice(path(layer, p), out_idx=ch))
    set_path(layer, fam.o, _slice(path(layer, fam.o), in_idx=q_ch))
    attn = path(layer, fam.attention)
    if fam.heads:  # transformers reshapes with -1 heads, but keeps these for anything that reads them
        setattr(attn, fam.heads, len(q_ch) // size)
    for attr in fam.widths:  # GPT-2 splits c_attn's output at split_size
        setattr(attn, attr, len(q_ch))


def prune_ffn(layer: nn.Module, keep: torch.Tensor, family: Family | None = None) -> None:
    """Keep only MLP channels `keep` (indices) of `layer`, in place."""
    fam = family or _family(layer)
    keep = keep.sort().values
    for p in (fam.up, fam.gate):
        if p:
            set_path(layer, p, _slice(path(layer, p), out_idx=keep))
    set_path(layer, fam.down, _slice(path(layer, fam.down), in_idx=keep))


def prune_blocks(model: nn.Module, ratio: float, round_to: int = 1, *, heads: bool = True,
                 ffn: bool = True) -> nn.Module:
    """A copy of `model` with `ratio` of the key/value groups (heads) and of the MLP channels of every block
    removed (the weakest by L1 magnitude); `round_to` > 1 keeps a multiple of that many MLP channels."""
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must lie in [0, 1), got {ratio!r}")
    model = copy.deepcopy(model).eval()
    if ratio == 0:
        return model
    found = families.named_blocks(model)
    if not found:
        raise ValueError(f"{type(model).__name__} has no encoder layer of a known layout nor any block of a family "
                         f"record ({', '.join(families.FAMILIES.names)}; see techniques/families.py)")
    for _, layer, fam in found:
        if heads:
            kv = attention_shape(layer, fam)[1]
            prune_heads(layer, head_scores(layer, fam).topk(keep_count(kv, ratio)).indices, fam)
        if ffn:
            n = _out_features(path(layer, fam.up))
            prune_ffn(layer, ffn_scores(layer, fam).topk(keep_count(n, ratio, round_to)).indices, fam)
    return model


prune_encoder = prune_blocks  # its name before decoders had records


def keep_layers(model: nn.Module, n: int) -> nn.Module:
    """`model` (in place) with only its first `n` blocks: the top ones leave the graph (dropping the top
    layers of a pretrained BERT costs least accuracy: Sajjad et al., "On the effect of dropping layers of
    pre-trained transformer models", 2023); `config.num_hidden_layers` follows (Llama's forward reads it), and a
    per-layer `config.layer_types` list is cut to match. 0 keeps them all."""
    layers = families.blocks(model)
    if n > len(layers):
        raise ValueError(f"layers {n} is more than the model's {len(layers)} encoder layers")
    return model if n <= 0 or n == len(layers) else drop_layers(model, range(n, len(layers)))


def drop_layers(model: nn.Module, drop: Iterable[int]) -> nn.Module:
    """`model` (in place) without the blocks numbered `drop` (0 the bottom one; e.g. the least influential ones,
    `layers.block_influence`); `config.num_hidden_layers` and `config.layer_types` follow, and each kept block's
    attention `layer_idx` is renumbered 0..n-1 (a decoder's cache indexes by it)."""
    layers = families.blocks(model)
    drop = set(drop)
    if not drop <= set(range(len(layers))) or len(drop) >= len(layers):
        raise ValueError(f"drop {sorted(drop)}: give block numbers in 0..{len(layers) - 1}, not all of them")
    holder = next(m for m in model.modules() if isinstance(m, nn.ModuleList) and any(x is layers[0] for x in m))
    kept = [layer for i, layer in enumerate(holder) if i not in drop]
    for name, child in model.named_modules():
        if child is holder:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.ModuleList(kept))
    for i, block in enumerate(kept):
        family = families.family_of_block(block)
        attn = families.path(block, family.attention) if family is not None else None
        if attn is not None and getattr(attn, "layer_idx", None) is not None:
            attn.layer_idx = i
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    for config in configs.values():  # one shared object in a transformers model: each written once
        if hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(kept)
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
    return model


# ---- the names before family records (the existing tests call them; new code calls `families`) ----
def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """`families.blocks`."""
    return families.blocks(model)


def is_transformer(model: nn.Module) -> bool:
    """`families.family_of(model) is not None`."""
    return families.family_of(model) is not None


def layout_of(module: nn.Module) -> Family | None:
    """`families.family_of_block`."""
    return families.family_of_block(module)


# ---- helpers ----------------------------------------------------------------------------------
def _family(block: nn.Module) -> Family:
    fam = families.family_of_block(block)
    if fam is None:
        raise ValueError(f"{type(block).__name__} is no block of a family record ({', '.join(families.FAMILIES.names)})")
    return fam


def _is_linear(lin: nn.Module) -> bool:
    return isinstance(lin, nn.Linear)


def _rows(lin: nn.Module) -> torch.Tensor:
    """The weight as (out, in), detached: an nn.Linear's own, a Conv1D's transposed."""
    w = lin.weight.detach()
    return w if _is_linear(lin) else w.t()


def _out_features(lin: nn.Module) -> int:
    return lin.weight.shape[0] if _is_linear(lin) else lin.weight.shape[1]


def _row_l1(lin: nn.Module) -> torch.Tensor:
    """L1 magnitude of each output row with its bias."""
    score = _rows(lin).abs().sum(dim=1)
    return score + (lin.bias.detach().abs() if lin.bias is not None else 0)


def _qkv_row_l1(layer: nn.Module, fam: Family) -> list[torch.Tensor]:
    if fam.fused_qkv:
        return list(_row_l1(path(layer, fam.qkv[0])).chunk(3))
    return [_row_l1(path(layer, p)) for p in fam.qkv]


def _channels(units: torch.Tensor, size: int) -> torch.Tensor:
    return (units[:, None] * size + torch.arange(size)).flatten()


def _slice(lin: nn.Module, *, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> nn.Module:
    """A new module of `lin`'s kind holding its output rows `out_idx` and input columns `in_idx` (None: all)."""
    w = _rows(lin)
    b = lin.bias.detach() if lin.bias is not None else None
    if out_idx is not None:
        w = w[out_idx]
        b = b[out_idx] if b is not None else None
    if in_idx is not None:
        w = w[:, in_idx]
    if _is_linear(lin):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
        weight = w
    else:  # transformers' Conv1D(nf, nx): weight (nx, nf), always a bias
        new = type(lin)(w.shape[0], w.shape[1]).to(device=w.device, dtype=w.dtype)
        weight = w.t()
    with torch.no_grad():
        new.weight.copy_(weight)
        if b is not None:
            new.bias.copy_(b)
    new.train(lin.training)
    return new
