"""Model families as records: where a Transformer keeps its blocks, heads, projections and MLP, one `Family` each.

After Optimum's `NormalizedConfig` (`NormalizedTextConfig.with_args(num_layers=..., num_attention_heads=...)`: one
line per architecture) and `TasksManager` (architecture -> export): every reader of "what kind of Transformer is
this" (pruning, `layers`, fusion, the INT8 route, the fine-tune recipe, the model family on cards) asks
`family_of(model)`; nothing else detects a family. Paths are dotted, from the block:

    family      block (e.g.)          q / k / v                 o                     up / gate / down
    bert        BertLayer             attention.self.query ...  attention.output.dense intermediate.dense / - / output.dense
    distilbert  TransformerBlock      attention.q_lin ...       attention.out_lin     ffn.lin1 / - / ffn.lin2
    vit         ViTLayer              attention.q_proj ...      attention.o_proj      mlp.fc1 / - / mlp.fc2
    gpt2        GPT2Block             attn.c_attn (fused q|k|v) attn.c_proj           mlp.c_fc / - / mlp.c_proj
    llama       LlamaDecoderLayer     self_attn.q_proj ...      self_attn.o_proj      mlp.up_proj / gate_proj / down_proj

A block is a module whose class is one of the record's `block_types` (a class name, or its module's tail and the
name for a name as common as DistilBERT's `TransformerBlock`; then every path must be there: a record
that names a module the block lacks is one line, `ConfigError`), or, for a class no record names (a BERT clone),
a module that has every path with a Linear (or GPT-2's transposed `Conv1D`) and the head-size attribute.

Adding a family is one record (see `docs/architecture.md`, "Extending it"): in this file's `FAMILIES` for a
built-in one, or `with FAMILIES.registered(Family(...)):` for one block of code (the table is as before when it
ends: a scoped registry, as torch-pruning's dependency graph copies its default registry per instance).

The module imports no torch at import time (`int8_dynamic` and the card read it torch-free).

Example:
    >>> import transformers  # doctest: +SKIP
    >>> model = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(  # doctest: +SKIP
    ...     hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    >>> family_of(model).name, len(blocks(model))  # doctest: +SKIP
    ('llama', 2)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lepton_search.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

OPTIMIZERS = ("adamw", "sgd")  # training.RECIPES' names (not imported: this module stays torch-free)


@dataclass(frozen=True)
class ExportInputs:
    """What the exported graph of a family takes: input names in order, their dynamic axes (input -> axis names,
    as `torch.onnx.export`'s `dynamic_axes` reads them) and whether it carries past key/values (a decoder's
    cached export; no family exports them yet)."""

    names: tuple[str, ...] = ("input_ids", "attention_mask")
    dynamic_axes: tuple[tuple[str, tuple[str, ...]], ...] = (("input_ids", ("batch", "sequence")),
                                                             ("attention_mask", ("batch", "sequence")))
    past_key_values: bool = False


@dataclass(frozen=True)
class Family:
    """One Transformer family: where its blocks keep what a head, a key/value group or an MLP channel is made of.

    `qkv`: the query, key and value projections (three paths), or one path whose output holds q, k and v side by
    side (GPT-2's `c_attn`). `heads`: the attention module's attribute holding its number of query heads
    (rewritten when heads go; None: it keeps none and the count is q's width / head size); `head_size`: the one
    holding one head's size; `kv_groups`: the one holding query heads per key/value head (grouped-query
    attention; None: one key/value head per query head); `widths`: attributes holding heads x head size
    (rewritten). `fusion`: ONNX Runtime's transformer-optimizer `model_type` (None: it has none for the family and
    the `fusion` knob is refused by name). `optimizer` / `lr`: the default fine-tune recipe (`finetune.recipe_for`;
    lr None: the optimizer's own rate).
    """

    name: str
    block_types: tuple[str, ...]
    attention: str
    qkv: tuple[str, ...]
    o: str
    up: str
    down: str
    head_size: str
    gate: str | None = None
    heads: str | None = "num_attention_heads"
    kv_groups: str | None = None
    widths: tuple[str, ...] = ()
    causal: bool = False
    fusion: str | None = None
    export: ExportInputs = field(default_factory=ExportInputs)
    optimizer: str = "adamw"
    lr: float | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name or ""):
            raise ConfigError("family.name", self.name, "give a lower-case identifier, e.g. 'llama'")
        if len(self.qkv) not in (1, 3):
            raise ConfigError(f"families.{self.name}.qkv", self.qkv, "give three paths (q, k, v) or one fused q|k|v")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"families.{self.name}.optimizer", self.optimizer, f"give one of {', '.join(OPTIMIZERS)}")

    @property
    def projections(self) -> dict[str, str]:
        """Field name -> path of every projection the record names (q/k/v, o, up, down, gate)."""
        names = ("q", "k", "v") if len(self.qkv) == 3 else ("qkv",)
        out = dict(zip(names, self.qkv)) | {"o": self.o, "up": self.up, "down": self.down}
        return out | ({"gate": self.gate} if self.gate else {})

    @property
    def fused_qkv(self) -> bool:
        return len(self.qkv) == 1

    def matches(self, block: nn.Module) -> bool:
        """Whether `block` has every projection (a Linear or Conv1D) and the head-size attribute this record
        names."""
        return not self.missing(block)

    def missing(self, block: nn.Module) -> list[tuple[str, str]]:
        """(field, path) of each projection or attribute the record names that `block` lacks."""
        out = [(f, p) for f, p in self.projections.items() if not _linear_like(path(block, p))]
        attn = path(block, self.attention)
        for f in ("head_size", "heads", "kv_groups"):
            attr = getattr(self, f)
            if attr and not isinstance(getattr(attn, attr, None), int):
                out.append((f, f"{self.attention}.{attr}"))
        return out

    def check(self, block: nn.Module, where: str = "") -> None:
        """Refuse in one line a record that names a module or attribute `block` does not have."""
        gaps = self.missing(block)
        if gaps:
            f, p = gaps[0]
            have = ", ".join(n for n, _ in block.named_children())
            raise ConfigError(f"families.{self.name}.{f}", p,
                              f"{type(block).__name__}{' at ' + where if where else ''} has no such Linear/Conv1D "
                              f"or int attribute (its children: {have}); fix the record's path")


class FamilyTable(Sequence[Family]):
    """The family records, in lookup order. `registered(...)` / `without(...)` change it for one `with` block."""

    def __init__(self, families: Sequence[Family] = ()) -> None:
        self._families: tuple[Family, ...] = ()
        self._families = self._added(families)

    def __getitem__(self, index):  # type: ignore[override]
        return self._families[index]

    def __len__(self) -> int:
        return len(self._families)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self._families)

    def get(self, name: str) -> Family:
        """The record named `name`; an unknown name lists the known ones."""
        for fam in self._families:
            if fam.name == name:
                return fam
        raise ConfigError("family", name, did_you_mean(name, self.names))

    def copy(self) -> FamilyTable:
        return FamilyTable(self._families)

    @contextlib.contextmanager
    def registered(self, *families: Family) -> Iterator[FamilyTable]:
        """Add `families` (looked up before the others) inside a `with` block; the table is as before after."""
        before = self._families
        self._families = self._added(families, first=True)
        try:
            yield self
        finally:
            self._families = before

    @contextlib.contextmanager
    def without(self, *names: str) -> Iterator[FamilyTable]:
        """The table without the records `names` inside a `with` block (a model of that family then has none)."""
        for name in names:
            self.get(name)  # an unknown name is refused
        before = self._families
        self._families = tuple(f for f in before if f.name not in names)
        try:
            yield self
        finally:
            self._families = before

    def _added(self, families: Sequence[Family], *, first: bool = False) -> tuple[Family, ...]:
        known = {f.name for f in self._families}
        for fam in families:
            if not isinstance(fam, Family):
                raise ConfigError("family", fam, "register a Family(name, block_types, attention, qkv, o, up, ...)")
            if fam.name in known:
                raise ConfigError("family", fam.name, "a family of that name is in the table already")
            known.add(fam.name)
        return (*families, *self._families) if first else (*self._families, *families)


def _bert_like(name: str, block_types: tuple[str, ...]) -> Family:
    return Family(name, block_types, attention="attention.self",
                  qkv=("attention.self.query", "attention.self.key", "attention.self.value"),
                  o="attention.output.dense", up="intermediate.dense", down="output.dense",
                  head_size="attention_head_size", widths=("all_head_size",), fusion="bert",
                  export=ExportInputs(("input_ids", "attention_mask", "token_type_ids")))


FAMILIES = FamilyTable((
    # BERT and its clones with the same layer (MiniLM is a BertModel; RoBERTa, ELECTRA, XLM-R name their layers)
    _bert_like("bert", ("BertLayer", "RobertaLayer", "XLMRobertaLayer", "ElectraLayer", "CamembertLayer")),
    Family("distilbert", ("modeling_distilbert.TransformerBlock",), attention="attention",
           qkv=("attention.q_lin", "attention.k_lin", "attention.v_lin"), o="attention.out_lin",
           up="ffn.lin1", down="ffn.lin2", heads="n_heads", head_size="attention_head_size",
           fusion="bert"),  # ORT fuses DistilBERT as "bert" (Optimum does the same)
    # ViT / DeiT in transformers 5
    Family("vit", ("ViTLayer", "DeiTLayer"), attention="attention",
           qkv=("attention.q_proj", "attention.k_proj", "attention.v_proj"), o="attention.o_proj",
           up="mlp.fc1", down="mlp.fc2", head_size="head_dim", fusion="vit",
           export=ExportInputs(("pixel_values",), (("pixel_values", ("batch",)),))),
    # GPT-2: Conv1D (weight (in, out)); c_attn holds q | k | v side by side, split at `split_size`
    Family("gpt2", ("GPT2Block",), attention="attn", qkv=("attn.c_attn",), o="attn.c_proj",
           up="mlp.c_fc", down="mlp.c_proj", heads="num_heads", head_size="head_dim", widths=("split_size",),
           causal=True, fusion="gpt2"),
    # Llama, SmolLM2, Qwen2, Mistral: gated MLP, grouped-query attention; ORT's optimizer has no Llama model type
    Family("llama", ("LlamaDecoderLayer", "Qwen2DecoderLayer", "MistralDecoderLayer"), attention="self_attn",
           qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.o_proj",
           up="mlp.up_proj", gate="mlp.gate_proj", down="mlp.down_proj", heads=None, head_size="head_dim",
           kv_groups="num_key_value_groups", causal=True, fusion=None),
))


def family_of_block(module: nn.Module, table: FamilyTable | None = None, *, where: str = "") -> Family | None:
    """The family `module` is a block of, None when it is none. A module whose class a record names but that
    lacks one of the record's paths is refused in one line (`Family.check`), not passed over."""
    table = FAMILIES if table is None else table
    cls = f"{type(module).__module__}.{type(module).__qualname__}"
    for fam in table:
        if any(cls == t or cls.endswith("." + t) for t in fam.block_types):
            fam.check(module, where)
            return fam
    return next((fam for fam in table if fam.matches(module)), None)


def named_blocks(model: nn.Module, table: FamilyTable | None = None) -> list[tuple[str, nn.Module, Family]]:
    """(name, block, family) of every block of a known family in `model`, in registration order. A block's own
    sub-modules are not searched (a block holds no block)."""
    out: list[tuple[str, nn.Module, Family]] = []
    inside: tuple[str, ...] = ()
    for name, m in model.named_modules():
        if inside and any(name.startswith(p + ".") for p in inside):
            continue
        fam = family_of_block(m, table, where=name)
        if fam is not None:
            out.append((name, m, fam))
            inside = (*inside, name)
    return out


def blocks(model: nn.Module, table: FamilyTable | None = None) -> list[nn.Module]:
    """The Transformer blocks (layers) of a known family inside `model`, in order (empty: none)."""
    return [m for _, m, _ in named_blocks(model, table)]


def family_of(model: nn.Module, table: FamilyTable | None = None) -> Family | None:
    """The family of `model`'s blocks (of the first, should they differ); None: no block of a known family."""
    found = named_blocks(model, table)
    return found[0][2] if found else None


ATTENTION_NAME = re.compile(r"attention|attn", re.IGNORECASE)


def unrecorded_attention(model: nn.Module, table: FamilyTable | None = None) -> list[str]:
    """Names of the attention-like modules of `model` no family record covers: a module whose class name says
    attention (`...Attention`, `...Attn`) and that holds two or more Linear / Conv1D children of its own (its
    projections: a whole model named `...AttentionClassifier` is not one), outside every recorded block and other than
    torch's own `nn.MultiheadAttention` (which `prune.kept_whole` keeps whole); outermost ones only."""
    from torch import nn

    covered = tuple(name for name, _, _ in named_blocks(model, table))
    found: list[str] = []
    for name, m in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in (*covered, *found)) or not name:
            continue
        if isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            continue
        if ATTENTION_NAME.search(type(m).__name__) and sum(_linear_like(c) for c in m.children()) >= 2:
            found.append(name)
    return found


def has_attention(model: nn.Module, table: FamilyTable | None = None) -> bool:
    """Whether `model` holds self-attention: blocks of a known family, torch's own attention modules, or an
    attention-like module no record covers (the INT8 route and the card's model family read this)."""
    from torch import nn

    return (family_of(model, table) is not None
            or any(isinstance(m, (nn.MultiheadAttention, nn.TransformerEncoderLayer)) for m in model.modules())
            or bool(unrecorded_attention(model, table)))


# ---- paths ------------------------------------------------------------------------------------
def path(module: object, dotted: str) -> object:
    """`module.a.b` for path "a.b"; None where a step is missing."""
    for name in dotted.split("."):
        module = getattr(module, name, None)
    return module


def set_path(module: nn.Module, dotted: str, value: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(path(module, parent) if parent else module, name, value)


def _linear_like(m: object) -> bool:
    """An nn.Linear, or a transposed one (transformers' `Conv1D`: weight (in, out), `nf` outputs)."""
    from torch import nn

    if isinstance(m, nn.Linear):
        return True
    weight = getattr(m, "weight", None)
    return type(m).__name__ == "Conv1D" and getattr(weight, "ndim", 0) == 2 and hasattr(m, "nf")
