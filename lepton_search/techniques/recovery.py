"""Recovery, the train stage: BatchNorm re-estimated, the head refit where asked, and `finetune_epochs` of
distillation from the unpruned teacher (quantization-aware where the route chosen before training is static),
resumed from and stored into fine-tuning checkpoints (`techniques.checkpoints`).

A checkpoint is keyed on what makes the student: the base's weights, every knob of a technique that is `keyed`
(`stages.keyed_knobs`), whether it trains quantization-aware, the seed, the fine-tune settings, the subset and the
schedule's horizon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

from lepton_search.errors import ConfigError
from lepton_search.logging import stage
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace
from lepton_search.techniques import families, finetune, qat
from lepton_search.techniques.checkpoints import CheckpointStore, weights_digest
from lepton_search.techniques.stages import (
    Build,
    CheckContext,
    InputTransform,
    Technique,
    Verdict,
    keyed_knobs,
)

_ADDED_SETTINGS = {"device": "cpu", "hidden_weight": 0.0}  # fine-tune settings added since keys were first made


def keyed_settings(settings: FinetuneSettings) -> dict[str, Any]:
    """The settings as a checkpoint key holds them: a setting added later is left out at its default, so keys made
    before it existed still match (a CUDA student, or one matching hidden states, is another key)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if _ADDED_SETTINGS.get(k, object()) != v}


def refits_head(settings: FinetuneSettings, config: CompressionConfig, model: Any,
                techniques: Iterable[Technique] | None = None) -> bool:
    """Whether `compress` refits the head of `model` compressed by `config`: "on" after any change to the model or
    its inputs (a technique's `changes_model`), "auto" where a technique asks for it (`refit_auto`: a Transformer
    that loses encoder layers). On bbc-minilm, INT8, no epoch: cut to 64 tokens and 3 layers the refit took
    validation from 93.19% to 96.71%, but cut to 32 tokens alone from 96.24% to 94.84% (its features barely
    moved; the refit fits the training split's teacher outputs): a loaded host, one run each."""
    from lepton_search.techniques.stages import registered

    techniques = registered() if techniques is None else tuple(techniques)
    if settings.head_refit == "on":
        return any(t.changes_model(config) for t in techniques)
    return settings.head_refit == "auto" and any(t.refit_auto(config, model) for t in techniques)


def student_view(workload: Any, transform: InputTransform | None) -> Callable[[Any], Any] | None:
    """`transform` on a training batch's inputs (a tensor, or a tuple in the workload's input order): what the
    student is fed while fine-tuning (the teacher keeps the whole inputs: it teaches at full length)."""
    if transform is None:
        return None
    names = workload.input_names

    def view(xb: Any) -> Any:
        xs = xb if isinstance(xb, tuple) else (xb,)
        out = transform.apply(dict(zip(names, xs)))
        ys = tuple(out[n] for n in names)
        return ys if len(ys) > 1 else ys[0]

    return view


class Recovery(Technique):
    name, knobs, stage, order, keyed = "recovery", ("finetune_epochs",), "train", 0, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        if space.finetune.hidden_weight and families.family_of(ctx.workload.model) is None:
            raise ConfigError("finetune.hidden_weight", space.finetune.hidden_weight, f"workload "
                              f"{ctx.workload.name!r} has no Transformer encoder layer or decoder block whose hidden "
                              "states a student could match; set 0")
        return Verdict()

    def apply(self, build: Build) -> None:
        config, settings, workload = build.config, build.settings, build.workload
        model = build.own()
        subset = settings.subset_of(len(workload.dataset("train")))
        train = workload.loader("train", batch_size=settings.batch_size, shuffle=True, subset=subset, seed=build.seed)
        bn_batches = finetune.recalibrate_batchnorm(model, train, max_batches=settings.bn_batches)
        quant_aware = config.bits == 8 and config.finetune_epochs > 0 and build.route.static
        horizon = max(build.horizon, config.finetune_epochs)
        key = None if build.checkpoints is None or config.finetune_epochs == 0 else CheckpointStore.key(
            base=build.base_digest or weights_digest(build.base), prune=keyed_knobs(config, build.techniques),
            quantization_aware=quant_aware, seed=build.seed, settings=keyed_settings(settings), subset=subset,
            horizon=horizon)
        with contextlib.ExitStack() as held:
            if key is not None:
                held.enter_context(build.checkpoints.lock(key))
            seconds, reused, seconds_before = _distill(
                model, build.teacher, train, config, settings, quant_aware, horizon, build.checkpoints, key,
                workload.task, student_view(workload, build.transform),
                refit=workload.task.head_refit and refits_head(settings, config, build.base, build.techniques))
        if config.finetune_epochs > 0:
            # Weights moved: BN statistics follow the final weights, not a running mix over training.
            finetune.recalibrate_batchnorm(model, train, max_batches=settings.bn_batches)
        build.figures.update(
            finetune_seconds=seconds, finetune_subset=len(train.dataset) if config.finetune_epochs else 0,
            finetune_samples=len(train.dataset) * config.finetune_epochs, bn_batches=bn_batches,
            quantization_aware=quant_aware, finetune_epochs_reused=reused,
            finetune_seconds_total=seconds_before + seconds)


def _distill(model: Any, teacher: Any, train: Any, config: CompressionConfig, settings: FinetuneSettings,
             quant_aware: bool, horizon: int, checkpoints: CheckpointStore | None, key: str | None, task: Any = None,
             view: Callable[[Any], Any] | None = None, refit: bool = False) -> tuple[float, int, float]:
    """Distil `model` up to `config.finetune_epochs`, from the latest stored epoch when there is one; `refit`: its
    head first (`finetune.refit_head`), unless a stored epoch replaces the weights anyway.

    Returns (seconds trained here, epochs reused, seconds the reused epochs took)."""
    found = None if key is None else checkpoints.latest(key, upto=config.finetune_epochs)
    reused, seconds_before = (found[0], float(found[1]["seconds"])) if found else (0, 0.0)
    if refit and not found:
        with stage("refit the head on its features (L-BFGS)"):
            finetune.refit_head(model, teacher, train, student_view=view, task=task,
                                temperature=settings.temperature, distill_weight=settings.distill_weight)
    with qat.simulate_int8(model) if quant_aware else contextlib.nullcontext():
        if found:
            model.load_state_dict(found[1]["model"])
            if quant_aware:
                qat.set_act_ranges(model, found[1]["act_ranges"])
        start = time.perf_counter()

        def save(epoch: int, state: dict) -> None:
            checkpoints.save(key, epoch, {"model": model.state_dict(), "train": state,
                                          "seconds": seconds_before + time.perf_counter() - start,
                                          "act_ranges": qat.act_ranges(model) if quant_aware else []})

        seconds = finetune.distill(
            model, teacher, train, epochs=config.finetune_epochs, lr=settings.lr, optimizer=settings.optimizer,
            temperature=settings.temperature, distill_weight=settings.distill_weight,
            desc="fine-tune", horizon=horizon, resume=found[1]["train"] if found else None,
            on_epoch=save if key is not None else None, task=task, student_view=view, device=settings.device,
            hidden_weight=settings.hidden_weight,
        )
    return seconds, reused, seconds_before


TECHNIQUES = (Recovery(),)
