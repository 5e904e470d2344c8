"""Techniques as stages: what changes a model, one registered object per technique, and `compress` a loop over them.

A technique owns its knobs (the `KNOBS` rows whose `applied_by` names its module), its "can I act on this model"
check (a refusal, or a fix with a warning), the input transform it makes (`seq_len`), whether its knobs change
what fine-tuning trains (its part of the checkpoint key), and what it adds to the file's route record. Anchors:
Olive's passes (`olive/passes/olive_pass.py`: one class a pass, its config, its applicability) and torch-pruning's
per-type pruner registry (`pruner/function.py`).

Stages run in this order; within one, by `order`:

    module  the torch model changes shape or values (embedding_dim, prune_ratio, layers, weight sharing)
    train   BatchNorm re-estimation and distillation (finetune_epochs; quantization-aware where the route is static)
    export  the ONNX graph as exported, rewritten (fusion)
    graph   the graph's arithmetic (bits / int8_mode, embedding_bits, weight-sharing codebooks)

Registration is the knob table itself: a technique's module lists it in `TECHNIQUES`, and `registered()` reads
every knob's `applied_by` module, so a new knob is its table row plus its technique (2 files). Nothing is
registered at import time.

Example:
    >>> [t.name for t in registered()][:3]
    ['embedding_dim', 'prune', 'layers']
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError
from lepton_search.knobs import KNOBS, Knob
from lepton_search.space import CompressionConfig, SearchSpace

STAGES = ("module", "train", "export", "graph")
Feeds = dict[str, np.ndarray]  # input name -> a batch, in the input's own dtype (what ONNX Runtime is fed)


@dataclass(frozen=True)
class InputTransform:
    """How a knob changes what the model is fed (fewer tokens, another resolution): one function on feeds,
    applied alike to the export's example, the INT8 calibration batches, the evaluation batches and the samples
    latency is timed on, so the file, its latency and its accuracy are all at the transformed inputs."""

    name: str
    apply: Callable[[Feeds], Feeds]


@dataclass
class Verdict:
    """What a technique's check says of a space on one model: knob -> the domain it is fixed to (what
    `SearchSpace` takes), and one note per change or caveat (each a warning where the space is prepared)."""

    changes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CheckContext:
    """What checks read about the model a space is prepared for: the workload (model, inputs, splits) and its
    exported FP32 graph."""

    workload: Any
    graph: Any  # onnx.ModelProto


@dataclass
class Build:
    """One candidate while `compress` builds it; each stage reads and replaces what it needs."""

    workload: Any
    config: CompressionConfig
    settings: Any  # FinetuneSettings, concrete (`finetune.recipe_for`)
    seed: int
    base: Any  # the unpruned torch model (never changed)
    teacher: Any
    example: Any  # the example input the model is traced with (a tensor, or a tuple of them)
    model: Any = None  # the torch model being built (the base itself until a module stage copies it)
    transform: InputTransform | None = None
    route: Any = None  # the quantization route chosen before training (`quantize.QuantizationPlan`)
    graph: Any = None  # onnx.ModelProto, from the export stage on
    record: dict[str, Any] = field(default_factory=dict)  # route record pieces (Candidate.quantization)
    figures: dict[str, Any] = field(default_factory=dict)  # what the train stage measured (Candidate fields)
    checkpoints: Any = None
    horizon: int = 0
    base_digest: str | None = None
    techniques: tuple[Technique, ...] = ()

    def own(self) -> Any:
        """The model, copied from the base the first time a stage changes it in place."""
        import copy

        if self.model is self.base:
            self.model = copy.deepcopy(self.base).eval()
        return self.model


class Technique:
    """One technique: its knobs, its stage, its check, and what it does to a `Build` (hooks are no-ops here).

    `keyed`: its knobs change what fine-tuning trains (they key a fine-tuning checkpoint); a graph-only knob
    (fusion, embedding_bits) does not, so trials that differ only there share their student; nor do bits and
    int8_mode (they act on training only through quantization-aware fine-tuning, keyed on its own) and
    finetune_epochs (a checkpoint's own axis)."""

    name: str = ""
    knobs: tuple[str, ...] = ()
    stage: str = "module"
    order: int = 0
    keyed: bool = True

    def active(self, config: CompressionConfig) -> bool:
        """Whether `config` sets any of its knobs off its no-op."""
        return any(getattr(config, k) != KNOBS[k].noop for k in self.knobs)

    def knob_values(self, config: CompressionConfig) -> dict[str, Any]:
        """Its knobs' values as they act on `config` (where active): a knob another knob makes a no-op (a zero
        point in symmetric blocks) at its no-op, so two configs that make one file have one key (`graphs`)."""
        return {k: getattr(config, k) for k in self.knobs}

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        """Refuse (ConfigError) or fix (a Verdict) the knob values of `space` it cannot act on, on `ctx`'s model."""
        return Verdict()

    def transform(self, workload: Any, config: CompressionConfig) -> InputTransform | None:
        """What it does to the model's inputs (None: nothing)."""
        return None

    def changes_model(self, config: CompressionConfig) -> bool:
        """Whether it changes the model or its inputs (a head refit "on" follows any such change)."""
        return False

    def refit_auto(self, config: CompressionConfig, model: Any) -> bool:
        """Whether it wants the head refit under `head_refit: auto`."""
        return False

    def plan(self, build: Build) -> None:
        """Before the train stage: decide what later stages must agree on (the quantization route)."""

    def apply(self, build: Build) -> None:
        """Its stage's work on `build`."""

    def after_training(self, build: Build) -> None:
        """After the train stage, before export (masks and shared weights baked)."""

    def before_graph(self, build: Build) -> None:
        """After the export stage, before the graph stage changes the arithmetic (a codebook encoded)."""

    def __repr__(self) -> str:
        return f"<technique {self.name} ({self.stage}): {', '.join(self.knobs)}>"


def registered(table: Iterable[Knob] | None = None) -> tuple[Technique, ...]:
    """Every technique that reads a knob of `table` (default `KNOBS`), in stage order: each knob's `applied_by`
    module's `TECHNIQUES`. A knob whose module lists no technique reading it is refused in one line."""
    found: dict[int, Technique] = {}
    for knob in KNOBS if table is None else table:
        found.update((id(t), t) for t in [technique_for(knob)] if t is not None)
    return tuple(sorted(found.values(), key=lambda t: (STAGES.index(t.stage), t.order)))


def technique_for(knob: Knob) -> Technique | None:
    """The technique reading `knob` (None: the knob names no module, e.g. one a test registers for a block)."""
    if not knob.applied_by:
        return None
    try:
        module = importlib.import_module(knob.applied_by)
    except ImportError as exc:
        raise ConfigError(f"knobs.{knob.name}.applied_by", knob.applied_by, f"cannot be imported ({exc})") from None
    readers = [t for t in getattr(module, "TECHNIQUES", ()) if knob.name in t.knobs]
    if len(readers) != 1:
        raise ConfigError(f"knobs.{knob.name}.applied_by", knob.applied_by,
                          f"must list exactly one Technique reading {knob.name!r} in its TECHNIQUES "
                          f"(found {len(readers)})")
    if readers[0].stage not in STAGES:
        raise ConfigError(f"{knob.applied_by}.{readers[0].name}.stage", readers[0].stage, f"use one of {STAGES}")
    return readers[0]


def unread_knobs(space: SearchSpace) -> list[str]:
    """Knobs `space` sets off their no-op that no registered technique reads."""
    return [k.name for k in KNOBS if technique_for(k) is None and any(v != k.noop for v in space.domain(k.name))]


def check_space(ctx: CheckContext, space: SearchSpace,
                techniques: Iterable[Technique] | None = None) -> tuple[SearchSpace, list[str]]:
    """Every technique's check on `space`, in stage order, each seeing the space the checks before it left:
    the space a study searches, and the notes to warn of. A knob no technique reads is refused first."""
    import dataclasses

    unread = unread_knobs(space)
    if unread:
        knob = KNOBS[unread[0]]
        raise ConfigError(f"knobs.{knob.name}", next(v for v in space.domain(knob.name) if v != knob.noop),
                          "no registered technique reads this knob (its applied_by names no module); set it to "
                          f"{knob.noop!r} or register a Technique for it")
    notes: list[str] = []
    for technique in registered() if techniques is None else techniques:
        verdict = technique.check(ctx, space)
        if verdict.changes:
            space = dataclasses.replace(space, **verdict.changes)
        notes += verdict.notes
    return space, notes


def input_transform(workload: Any, config: CompressionConfig,
                    techniques: Iterable[Technique] | None = None) -> InputTransform | None:
    """What `config` does to the model's inputs: the techniques' transforms, composed in stage order."""
    parts = [t for tech in (registered() if techniques is None else techniques)
             if (t := tech.transform(workload, config)) is not None]
    if len(parts) <= 1:
        return parts[0] if parts else None

    def apply(feeds: Mapping[str, Any]) -> Feeds:
        for part in parts:
            feeds = part.apply(feeds)
        return dict(feeds)

    return InputTransform(", ".join(p.name for p in parts), apply)


def keyed_knobs(config: CompressionConfig, techniques: Iterable[Technique] | None = None) -> dict[str, Any]:
    """The knobs of `config` that change what fine-tuning trains and are off their no-op (a checkpoint key's
    part): a knob added later leaves every key made before it as it was, so a resumed study keeps its
    checkpoints."""
    keyed = {k for t in (registered() if techniques is None else techniques) if t.keyed for k in t.knobs}
    return {k: v for k, v in config.as_dict().items() if k in keyed and v != KNOBS[k].default.canonical(KNOBS[k].noop)}


def feeds_of(workload: Any, tensors: Iterable[Any]) -> Feeds:
    """One batch of the workload's inputs as feeds (input name -> array in the input's dtype)."""
    return {s.name: t.numpy().astype(s.dtype, copy=False) for s, t in zip(workload.inputs, tensors)}


def calibration_batches(workload: Any, n: int, seed: int, transform: InputTransform | None = None) -> list[Feeds]:
    """`n` single-sample feeds (input name -> array in its dtype) from the train split for INT8 calibration
    (never the validation split), transformed as the candidate's inputs are."""
    feeds = [feeds_of(workload, xs) for *xs, _ in workload.loader("train", batch_size=1, subset=n, seed=seed + 1)]
    return [transform.apply(f) for f in feeds] if transform is not None else feeds
