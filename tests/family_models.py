"""One tiny Hugging Face model per family record (random weights, built offline from a config), and BBC News token
data small enough to train them on in seconds.

`TINY[family name]` builds a 2-layer classifier of that family; the contract test (`tests/techniques/test_families.py`)
fails for a record in `FAMILIES` without an entry here, so a new family brings its tiny model.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import numpy as np
import torch

VOCAB, SEQ, CLASSES, HIDDEN = 64, 8, 3, 32


def _bert(layers: int = 2, vocab: int = VOCAB, classes: int = CLASSES) -> torch.nn.Module:
    import transformers

    return transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_labels=classes))


def _distilbert(layers: int = 2, vocab: int = VOCAB, classes: int = CLASSES) -> torch.nn.Module:
    import transformers

    return transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
        vocab_size=vocab, dim=HIDDEN, n_layers=layers, n_heads=4, hidden_dim=64, max_position_embeddings=64,
        num_labels=classes))


def _vit(layers: int = 2, vocab: int = VOCAB, classes: int = CLASSES) -> torch.nn.Module:
    import transformers

    from lepton_search.workloads.fashion_vit import vit_config

    return transformers.ViTForImageClassification(vit_config(hidden=HIDDEN, layers=layers, heads=4, ffn=64, patch=7,
                                                             num_classes=classes))


def _gpt2(layers: int = 2, vocab: int = VOCAB, classes: int = CLASSES) -> torch.nn.Module:
    import transformers

    return transformers.GPT2ForSequenceClassification(transformers.GPT2Config(
        vocab_size=vocab, n_embd=HIDDEN, n_layer=layers, n_head=4, n_inner=64, n_positions=64, num_labels=classes,
        pad_token_id=0))


def _llama(layers: int = 2, vocab: int = VOCAB, classes: int = CLASSES) -> torch.nn.Module:
    import transformers

    return transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=classes, pad_token_id=0))


TINY: dict[str, Callable[..., torch.nn.Module]] = {
    "bert": _bert, "distilbert": _distilbert, "vit": _vit, "gpt2": _gpt2, "llama": _llama}


def tiny(name: str, layers: int = 2, *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A tiny `name`-family classifier, random weights from `seed`, eval mode, eager attention."""
    torch.manual_seed(seed)
    model = TINY[name](layers, **kwargs).eval()
    model.set_attn_implementation("eager")
    return model


def inputs(name: str, n: int = 3) -> dict[str, torch.Tensor]:
    """A batch `name`'s model takes, by keyword: images for ViT, else token ids with padded rows (padding at the end,
    id 0: the decoders pool at the last real token)."""
    g = torch.Generator().manual_seed(1)
    if name == "vit":
        return {"pixel_values": torch.randn(n, 1, 28, 28, generator=g)}
    ids = torch.randint(2, VOCAB, (n, SEQ), generator=g)
    mask = torch.ones(n, SEQ, dtype=torch.int64)
    mask[1, 5:] = 0
    if n > 2:
        mask[2, 3:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


# ---- an independent reference: the L1 ranking from the raw arrays, units zeroed -------------------
def weight_out_in(lin: torch.nn.Module) -> np.ndarray:
    """A projection's weight as (out, in): nn.Linear's own, transformers' Conv1D's transposed."""
    w = lin.weight.detach().numpy()
    return w if isinstance(lin, torch.nn.Linear) else w.T


def zero_inputs(lin: torch.nn.Module, cols: list[int]) -> None:
    with torch.no_grad():
        if isinstance(lin, torch.nn.Linear):
            lin.weight[:, cols] = 0
        else:
            lin.weight[cols, :] = 0


def numpy_ranks(block: torch.nn.Module, fam, heads: int, kv: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """L1 score per key/value group and per MLP channel, from the raw arrays."""
    def rows(p):
        lin = _path(block, p)
        return np.abs(weight_out_in(lin)).sum(1) + (np.abs(lin.bias.detach().numpy()) if lin.bias is not None else 0)

    if fam.fused_qkv:
        q, k, v = np.split(rows(fam.qkv[0]), 3)
    else:
        q, k, v = (rows(p) for p in fam.qkv)
    per_q = q.reshape(heads, size).sum(1) + np.abs(weight_out_in(_path(block, fam.o))).sum(0).reshape(heads, size).sum(1)
    groups = per_q.reshape(kv, heads // kv).sum(1) + k.reshape(kv, size).sum(1) + v.reshape(kv, size).sum(1)
    ffn = np.abs(weight_out_in(_path(block, fam.down))).sum(0) + rows(fam.up) + (rows(fam.gate) if fam.gate else 0)
    return groups, ffn


def _path(module, dotted):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def zeroed_reference(model: torch.nn.Module, pruned: torch.nn.Module, ratio: float = 0.5) -> torch.nn.Module:
    """A copy of the unpruned `model` with the units an L1 ranking (`numpy_ranks`) removes at `ratio` zeroed: the
    removed heads' output-projection columns and the removed MLP channels' down-projection columns. Checks on
    the way that `pruned` holds exactly the kept columns."""
    from lepton_search.techniques import families
    from lepton_search.techniques import prune_transformer as pt

    zeroed = copy.deepcopy(model)
    for ref, block, (_, _, fam) in zip(families.blocks(zeroed), families.blocks(pruned), families.named_blocks(model)):
        heads, kv, size = pt.attention_shape(ref, fam)
        n_ffn = pt.block_shape(ref, fam).ffn_channels
        groups, ffn = numpy_ranks(ref, fam, heads, kv, size)
        keep_groups = sorted(np.argsort(-groups, kind="stable")[: kv - int(kv * ratio)])
        keep_ffn = sorted(np.argsort(-ffn, kind="stable")[: n_ffn - int(n_ffn * ratio)])
        per = heads // kv
        kept_q = [(g * per + r) * size + i for g in keep_groups for r in range(per) for i in range(size)]
        np.testing.assert_array_equal(weight_out_in(_path(block, fam.o)), weight_out_in(_path(ref, fam.o))[:, kept_q])
        np.testing.assert_array_equal(weight_out_in(_path(block, fam.down)),
                                      weight_out_in(_path(ref, fam.down))[:, keep_ffn])
        zero_inputs(_path(ref, fam.o), [c for c in range(heads * size) if c not in kept_q])
        zero_inputs(_path(ref, fam.down), [c for c in range(n_ffn) if c not in keep_ffn])
    return zeroed


# ---- BBC News, a few hundred articles, a compact vocabulary ------------------------------------
BBC_SEQ, BBC_VOCAB = 48, 1000


@functools.cache
def bbc_small(n_train: int = 320, n_val: int = 160) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """BBC News (`workloads.bbc.bbc_splits`, MiniLM WordPiece ids, first `BBC_SEQ` tokens) cut to `n_train` / `n_val`
    articles, ids mapped to the training split's `BBC_VOCAB` - 2 most frequent (1: any other id, 0: padding), so a
    tiny model's embedding table stays tiny."""
    from lepton_search.workloads.bbc import bbc_splits

    parts = bbc_splits(seq_len=BBC_SEQ)  # sorted by topic: a seeded shuffle first, so every topic is in the cut
    g = torch.Generator().manual_seed(0)
    cut = {s: torch.randperm(len(parts[s][2]), generator=g)[:n] for s, n in (("train", n_train), ("val", n_val))}
    train, val = (tuple(t[cut[s]] for t in parts[s]) for s in ("train", "val"))
    ids = train[0][train[1].bool()].numpy()
    ids = ids[ids != 0]
    values, counts = np.unique(ids, return_counts=True)
    keep = values[np.argsort(-counts, kind="stable")[: BBC_VOCAB - 2]]
    table = np.ones(30522, dtype=np.int64)  # MiniLM's WordPiece vocabulary
    table[keep] = np.arange(2, len(keep) + 2)
    table[0] = 0

    def remap(split):
        ids, mask, y = split
        return torch.from_numpy(table[ids.numpy()]) * mask, mask, y

    return {"train": remap(train), "val": remap(val)}


@functools.cache
def trained_bbc(name: str, *, epochs: int = 12) -> torch.nn.Module:
    """A tiny `name`-family classifier of the 5 BBC topics trained for `epochs` (AdamW, once per session)."""
    from lepton_search.training import fit, forward

    model = tiny(name, vocab=BBC_VOCAB, classes=5)
    wl = bbc_workload(name, model)
    torch.manual_seed(0)
    fit(wl.model, wl.loader("train", batch_size=32, shuffle=True, seed=0),
        lambda xb, yb: torch.nn.functional.cross_entropy(forward(wl.model, xb), yb), epochs=epochs, lr=3e-3,
        weight_decay=0.01, warmup=0.1, desc=f"train bbc {name}", optimizer="adamw")
    return model.eval()


def bbc_workload(name: str, model: torch.nn.Module | None = None):
    """A `Workload` of a tiny `name`-family model (trained on BBC News unless given) as it comes from transformers."""
    from lepton_search import Workload

    data = bbc_small()
    model = trained_bbc(name) if model is None else model
    ids, mask, _ = data["val"]
    return Workload(f"bbc-{name}", model, train=data["train"], val=data["val"], example_input=(ids[:1], mask[:1]),
                    batch_size=64)
