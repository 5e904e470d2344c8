"""compress(): CompressionConfig -> Candidate (a pruned, fine-tuned, quantized, exported ONNX file).

`compress` is a loop over the registered techniques (`techniques.stages`), stage by stage: module (the torch
model changes), train (recovery), export (the ONNX graph, rewritten), graph (its arithmetic). What each does, what
it refuses and what it keys is the technique's own; this module only runs them in order and records the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from lepton_search.logging import stage
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.techniques import export, finetune, prune, stages
from lepton_search.techniques.checkpoints import CheckpointStore
from lepton_search.techniques.stages import Build, InputTransform, Technique, calibration_batches, feeds_of
from lepton_search.workloads import Workload

__all__ = ["Candidate", "InputTransform", "calibration_batches", "compress", "describe_feeds", "feeds_of",
           "input_transform_for"]


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


def input_transform_for(workload: Workload, config: CompressionConfig) -> InputTransform | None:
    """What `config` does to the model's inputs (None: the workload's own): the techniques' transforms (`seq_len`
    cuts token inputs)."""
    return stages.input_transform(workload, config)


def describe_feeds(feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], ...]:
    """[{name, dtype, shape per sample}] of a batch of feeds (the form `Workload.describe_inputs` gives)."""
    return tuple({"name": n, "dtype": str(a.dtype), "shape": list(a.shape[1:])} for n, a in feeds.items())


def compress(
    workload: Workload, config: CompressionConfig, out_path: str | Path, *, settings: FinetuneSettings,
    teacher: nn.Module | None = None, seed: int = 0, checkpoints: CheckpointStore | None = None, horizon: int = 0,
    base_digest: str | None = None, on_model: Callable[[nn.Module], None] | None = None,
    input_transform: InputTransform | None = None, techniques: Iterable[Technique] | None = None,
) -> Candidate:
    """Every technique's stage in order (module -> train -> export -> graph); write `out_path`.

    With `checkpoints`, fine-tuning resumes from the latest stored epoch of the same pruned model and stores
    each epoch it trains (`techniques.checkpoints`); the schedule spans `horizon` epochs either way.
    `on_model` is given the pruned, fine-tuned torch model the file is exported from (`ModelOptimizer`).
    `input_transform`: what a knob does to the inputs (default: the techniques' for `config`); the file is
    exported, calibrated, and later evaluated and timed at the transformed inputs, and the student fine-tunes on
    them while the teacher sees the workload's own. `techniques`: default `stages.registered()`."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    techniques = stages.registered() if techniques is None else tuple(techniques)
    transform = input_transform or stages.input_transform(workload, config, techniques)
    base = workload.model.eval()
    build = Build(workload, config, finetune.recipe_for(base, settings),  # concrete before it keys a checkpoint
                  seed, base, teacher or finetune.frozen_copy(base), workload.example_args, model=base,
                  transform=transform, checkpoints=checkpoints, horizon=horizon, base_digest=base_digest,
                  techniques=techniques)
    macs_base, params_base = prune.count(base, build.example)
    _run(techniques, "module", build)
    for technique in techniques:  # what later stages must agree on (the quantization route), before training
        technique.plan(build)
    _run(techniques, "train", build)
    for technique in techniques:
        technique.after_training(build)
    model, x, samples = build.model, build.example, workload.sample_inputs()
    if transform is not None:
        samples = transform.apply(samples)
        example = transform.apply(feeds_of(workload, workload.example_inputs))
        x = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in workload.input_names)
        x = x[0] if len(x) == 1 else x
    macs, params = prune.count(model, x)
    if on_model is not None:
        on_model(model)

    out_path = Path(out_path)
    with stage("export to ONNX"):
        build.graph = export.to_onnx(model, x, out_path.with_suffix(".fp32.onnx"), names=workload.input_names,
                                     with_past=workload.generation, graph=workload.generation_graph)
    _run(techniques, "export", build)
    for technique in techniques:
        technique.before_graph(build)
    _run(techniques, "graph", build)
    onnx.save(build.graph, str(out_path))
    out_path.with_suffix(".fp32.onnx").unlink(missing_ok=True)
    figures = {"finetune_seconds": 0.0, "finetune_subset": 0, "finetune_samples": 0, "bn_batches": 0,
               **build.figures}
    return Candidate(
        config=config, onnx_path=out_path, size_mb=out_path.stat().st_size / 1e6,
        macs=macs, params=params, macs_ratio=macs / max(macs_base, 1), params_ratio=params / max(params_base, 1),
        weight_sparsity=prune.weight_sparsity(model), compress_seconds=time.perf_counter() - start, **figures,
        quantization=dict(build.record), inputs=describe_feeds(samples), sample_inputs=samples,
        input_transform=transform,
    )


def _run(techniques: Sequence[Technique], stage_name: str, build: Build) -> None:
    for technique in techniques:
        if technique.stage == stage_name:
            technique.apply(build)
