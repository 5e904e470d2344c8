"""compress(): CompressionConfig -> Candidate (a pruned, fine-tuned, quantized, exported ONNX file)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from lepton_search.logging import stage
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.techniques import (
    embeddings,
    export,
    finetune,
    fusion,
    int8_dynamic,
    prune,
    qat,
    quantize,
    weight_sharing,
)
from lepton_search.techniques.checkpoints import CheckpointStore, weights_digest
from lepton_search.workloads import Workload

Feeds = dict[str, np.ndarray]  # input name -> a batch, in the input's own dtype (what ONNX Runtime is fed)


@dataclass(frozen=True)
class InputTransform:
    """How a knob changes what the model is fed (fewer tokens, another resolution): one function on feeds,
    applied alike to the export's example, the INT8 calibration batches, the evaluation batches and the samples
    latency is timed on, so the file, its latency and its accuracy are all at the transformed inputs."""

    name: str
    apply: Callable[[Feeds], Feeds]


@dataclass(frozen=True)
class Candidate:
    config: CompressionConfig
    onnx_path: Path
    size_mb: float
    macs: int
    params: int
    macs_ratio: float  # pruned / base
    params_ratio: float
    weight_sparsity: float
    finetune_seconds: float
    finetune_subset: int  # train images per fine-tune epoch (0 when no epochs ran)
    finetune_samples: int  # images seen in all epochs
    bn_batches: int
    compress_seconds: float
    quantization_aware: bool = False
    exporter: str = export.EXPORTER
    finetune_epochs_reused: int = 0  # epochs loaded from a checkpoint instead of trained
    finetune_seconds_total: float = 0.0  # the reused epochs' recorded seconds + this trial's
    quantization: Mapping[str, Any] | None = None  # the route quantize took (`QuantizationRoute.as_dict()`)
    # What this file is fed (a knob may change it): its inputs [{name, dtype, shape per sample}], the samples its
    # latency is timed on, and the transform that makes any batch of the workload's data into its inputs.
    inputs: tuple[Mapping[str, Any], ...] = ()
    sample_inputs: Mapping[str, np.ndarray] | None = None
    input_transform: InputTransform | None = None


def token_window(workload: Workload, n: int) -> InputTransform:
    """The `seq_len` knob's transform: the first `n` tokens of every token-sequence input (int inputs of one axis as
    long as the workload's sequence), the rest as they are. Latency is then timed on the validation samples cut
    to `n` tokens: a fixed shape, as a server that pads or cuts to one length runs (BBC articles are all longer)."""
    full = workload.seq_len
    names = {s.name for s in workload.inputs if len(s.shape) == 1 and s.shape[0] == full and "int" in str(s.dtype)}

    def cut(feeds: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _first(v, n) if k in names else v for k, v in feeds.items()}

    return InputTransform(f"first {n} of {full} tokens", cut)


def _first(x: Any, n: int) -> Any:
    part = x[:, :n]
    return part.contiguous() if isinstance(part, torch.Tensor) else np.ascontiguousarray(part)


def input_transform_for(workload: Workload, config: CompressionConfig) -> InputTransform | None:
    """What `config` does to the model's inputs (None: the workload's own): `config.seq_len` cuts token inputs."""
    return token_window(workload, config.seq_len) if config.seq_len else None


def _torch_view(workload: Workload, transform: InputTransform | None) -> Callable[[Any], Any] | None:
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


def feeds_of(workload: Workload, tensors: Sequence[torch.Tensor]) -> Feeds:
    """One batch of the workload's inputs as feeds (input name -> array in the input's dtype)."""
    return {s.name: t.numpy().astype(s.dtype, copy=False) for s, t in zip(workload.inputs, tensors)}


def describe_feeds(feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], ...]:
    """[{name, dtype, shape per sample}] of a batch of feeds (the form `Workload.describe_inputs` gives)."""
    return tuple({"name": n, "dtype": str(a.dtype), "shape": list(a.shape[1:])} for n, a in feeds.items())

def calibration_batches(workload: Workload, n: int, seed: int,
                        transform: InputTransform | None = None) -> list[dict[str, np.ndarray]]:
    """`n` single-sample feeds (input name -> array in its dtype) from the train split for INT8 calibration
    (never the validation split), transformed as the candidate's inputs are."""
    feeds = [feeds_of(workload, xs) for *xs, _ in workload.loader("train", batch_size=1, subset=n, seed=seed + 1)]
    return [transform.apply(f) for f in feeds] if transform is not None else feeds


_ADDED_SETTINGS = {"device": "cpu", "hidden_weight": 0.0}  # fine-tune settings added since keys were first made


def _keyed(settings: FinetuneSettings) -> dict[str, Any]:
    """The settings as a checkpoint key holds them: a setting added later is left out at its default, so keys made
    before it existed still match (a CUDA student, or one matching hidden states, is another key)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if _ADDED_SETTINGS.get(k, object()) != v}


def _finetune(model: nn.Module, teacher: nn.Module, train: Any, config: CompressionConfig, settings: FinetuneSettings,
              quant_aware: bool, horizon: int, checkpoints: CheckpointStore | None, key: str | None, task: Any = None,
              student_view: Callable[[Any], Any] | None = None, refit: bool = False) -> tuple[float, int, float]:
    """Distil `model` up to `config.finetune_epochs`, from the latest stored epoch when there is one; `refit`: its
    head first (`finetune.refit_head`), unless a stored epoch replaces the weights anyway.

    Returns (seconds trained here, epochs reused, seconds the reused epochs took)."""
    found = None if key is None else checkpoints.latest(key, upto=config.finetune_epochs)
    reused, seconds_before = (found[0], float(found[1]["seconds"])) if found else (0, 0.0)
    if refit and not found:
        with stage("refit the head on its features (L-BFGS)"):
            finetune.refit_head(model, teacher, train, student_view=student_view, task=task,
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
            on_epoch=save if key is not None else None, task=task, student_view=student_view, device=settings.device,
            hidden_weight=settings.hidden_weight,
        )
    return seconds, reused, seconds_before


def compress(
    workload: Workload, config: CompressionConfig, out_path: str | Path, *, settings: FinetuneSettings,
    teacher: nn.Module | None = None, seed: int = 0, checkpoints: CheckpointStore | None = None, horizon: int = 0,
    base_digest: str | None = None, on_model: Callable[[nn.Module], None] | None = None,
    input_transform: InputTransform | None = None,
) -> Candidate:
    """Prune -> re-estimate BN -> distil for `finetune_epochs` -> export -> quantize; write `out_path`.

    With `checkpoints`, fine-tuning resumes from the latest stored epoch of the same pruned model and stores
    each epoch it trains (`techniques.checkpoints`); the schedule spans `horizon` epochs either way.
    `on_model` is given the pruned, fine-tuned torch model the file is exported from (`ModelOptimizer`).
    `input_transform`: what a knob does to the inputs (default: `input_transform_for(config)`); the file is
    exported, calibrated, and later evaluated and timed at the transformed inputs, and the student fine-tunes on
    them while the teacher sees the workload's own."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    input_transform = input_transform or input_transform_for(workload, config)
    x = workload.example_args
    base = workload.model.eval()
    settings = finetune.recipe_for(base, settings)  # concrete before it keys a checkpoint
    teacher = teacher or finetune.frozen_copy(base)
    macs_base, params_base = prune.count(base, x)
    # embedding_dim first: it drops table columns and the inputs of the layers reading them (a torch-pruning graph
    # of the plain model), then prune_ratio shrinks the layers' outputs
    slim = embeddings.prune_embedding_dims(copy.deepcopy(base).eval(), x, config.embedding_dim) \
        if config.embedding_dim < 1.0 else base
    with stage(f"prune ({config.prune_method} {config.prune_ratio:g})" if config.prune_ratio else "copy (no pruning)"):
        model = prune.prune(slim, x, config)
    weight_sharing.cluster(model, weight_sharing.clusters_of(config), seed=seed)  # weight_clusters: shared centroids

    subset = settings.subset_of(len(workload.dataset("train")))
    train = workload.loader("train", batch_size=settings.batch_size, shuffle=True, subset=subset, seed=seed)
    bn_batches = finetune.recalibrate_batchnorm(model, train, max_batches=settings.bn_batches)
    # INT8 of token-id, LSTM and self-attention graphs is dynamic (weights INT8, activations quantized at run time):
    # they fine-tune in float. The rule is quantize's own (int8_dynamic.dynamic_route); int8_mode overrides it.
    dynamic_int8 = int8_dynamic.module_takes_dynamic_route(model, [s.dtype for s in workload.inputs],
                                                           shapes=[s.shape for s in workload.inputs],
                                                           int8_mode=config.int8_mode)
    quant_aware = config.bits == 8 and config.finetune_epochs > 0 and not dynamic_int8
    horizon = max(horizon, config.finetune_epochs)
    key = None if checkpoints is None or config.finetune_epochs == 0 else CheckpointStore.key(
        # int8_mode acts on training only through quant_aware (keyed), fusion not at all: they share a student
        base=base_digest or weights_digest(base), prune={k: v for k, v in config.as_dict().items()
                                                         if k not in ("bits", "finetune_epochs", "int8_mode", "fusion")},
        quantization_aware=quant_aware, seed=seed, settings=_keyed(settings), subset=subset, horizon=horizon)
    with contextlib.ExitStack() as held:
        if key is not None:
            held.enter_context(checkpoints.lock(key))
        ft_seconds, reused, seconds_before = _finetune(model, teacher, train, config, settings, quant_aware, horizon,
                                                       checkpoints, key, workload.task,
                                                       _torch_view(workload, input_transform),
                                                       refit=finetune.refits_head(settings, config, base))
    if config.finetune_epochs > 0:
        # Weights moved: BN statistics follow the final weights, not a running mix over training.
        finetune.recalibrate_batchnorm(model, train, max_batches=settings.bn_batches)
    weight_sharing.bake(model)  # weight_clusters: plain weights of <= k values each
    model = prune.bake_masks(model, x)
    samples = workload.sample_inputs()
    if input_transform is not None:
        samples = input_transform.apply(samples)
        example = input_transform.apply(feeds_of(workload, workload.example_inputs))
        x = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in workload.input_names)
        x = x[0] if len(x) == 1 else x
    macs, params = prune.count(model, x)
    if on_model is not None:
        on_model(model)

    out_path = Path(out_path)
    with stage("export to ONNX"):
        graph = export.to_onnx(model, x, out_path.with_suffix(".fp32.onnx"), names=workload.input_names)
    fused_ops = None
    if config.fusion == "ort":
        with stage("fuse (ONNX Runtime transformer optimizer)"):
            graph, fused_ops = fusion.fuse(graph, model)
        if not fusion.attention_fused(fused_ops):
            warnings.warn(f"fusion 'ort': attention not fused in {config.label()} (fused {fused_ops or 'nothing'}); "
                          "the file runs unfused attention", stacklevel=2)
    with stage(f"quantize to {config.bits} bits" if config.bits < 32 else "FP32 (no quantization)"):
        graph, _ = weight_sharing.encode_graph(graph, weight_sharing.file_clusters(config))  # codebook + indices
        calib = calibration_batches(workload, settings.calibration_size, seed, input_transform) if config.bits == 8 else []
        graph, route = quantize.quantize_with_route(graph, config.bits, calib, int8_mode=config.int8_mode)  # NNCF leaves the tables FP32
        graph, tables = embeddings.quantize_embeddings(graph, config.embedding_bits)
    onnx.save(graph, str(out_path))
    out_path.with_suffix(".fp32.onnx").unlink(missing_ok=True)
    return Candidate(
        config=config, onnx_path=out_path, size_mb=out_path.stat().st_size / 1e6,
        macs=macs, params=params, macs_ratio=macs / max(macs_base, 1), params_ratio=params / max(params_base, 1),
        weight_sparsity=prune.weight_sparsity(model), finetune_seconds=ft_seconds,
        finetune_subset=len(train.dataset) if config.finetune_epochs else 0,
        finetune_samples=len(train.dataset) * config.finetune_epochs, bn_batches=bn_batches,
        compress_seconds=time.perf_counter() - start, quantization_aware=quant_aware,
        finetune_epochs_reused=reused, finetune_seconds_total=seconds_before + ft_seconds,
        quantization={**route.as_dict(), "embedding_bits": config.embedding_bits, "embedding_tables": tables,
                      "fusion": config.fusion, "fused_ops": fused_ops},
        inputs=describe_feeds(samples), sample_inputs=samples,
        input_transform=input_transform,
    )
