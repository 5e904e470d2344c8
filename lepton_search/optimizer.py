"""ModelOptimizer: one model, one call per technique, a before/after table. A thin layer over the pipeline's
stages (`candidate.compress`, `evaluate.measure_onnx`, a latency target, `workloads.transfer.migrate`): a
search runs the same code for each of its trials.

Example:
    >>> from lepton_search import ModelOptimizer
    >>> opt = ModelOptimizer(model, {"train": (x, y), "val": (xv, yv), "test": (xt, yt)})  # doctest: +SKIP
    >>> model, onnx_path, table = opt.compress(prune_ratio=0.5, bits=8, finetune_epochs=1)  # doctest: +SKIP
    >>> list(table.index), list(table.columns)  # doctest: +SKIP
    (['before', 'after'], ['config', 'accuracy', 'test_accuracy', 'training_s', 'latency_ms', 'size_mb', 'params', 'macs'])
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from lepton_search.candidate import Candidate, compress
from lepton_search.errors import ConfigError
from lepton_search.evaluate import Measurement, evaluate, measure_onnx
from lepton_search.knobs import KNOBS
from lepton_search.latency import LatencyModel, get_target
from lepton_search.logging import logger, scope, stage, verbosity
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.study import checked_config
from lepton_search.techniques import export, prune
from lepton_search.techniques.finetune import CachedTeacher, describe_recipe, frozen_copy, recipe_for
from lepton_search.techniques.stages import registered
from lepton_search.workloads import Workload
from lepton_search.workloads.transfer import migrate, workload_from

COLUMNS = ("config", "accuracy", "test_accuracy", "training_s", "latency_ms", "size_mb", "params", "macs")


@dataclass(frozen=True)
class OptimizeResult:
    """What one ModelOptimizer call made. Unpacks as `model, onnx_path, table`.

    `model`: the torch model the ONNX file was exported from, when the file runs that model as it is (FP32);
    None when the file is quantized (no torch model runs the INT8/FP16/INT4 graph). `table`: rows `before`
    and `after`, columns COLUMNS (accuracy on the validation split, in ONNX Runtime; training seconds; p50
    latency on the optimizer's target; file size).
    """

    model: nn.Module | None
    onnx_path: Path
    table: pd.DataFrame
    workload: Workload
    candidate: Candidate | None = None  # None for migrate (no compression)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.onnx_path, self.table))

    @property
    def speedup(self) -> float:
        return float(self.table.loc["before", "latency_ms"] / self.table.loc["after", "latency_ms"])


def _as_workload(model: nn.Module | None, data: Workload | Mapping[str, Any]) -> Workload:
    if isinstance(data, Workload) and model is None:
        return data
    if not isinstance(model, nn.Module):
        raise ConfigError("model", type(model).__name__, "pass a torch.nn.Module (or a Workload holding one)")
    return workload_from(data, model, name=data.name if isinstance(data, Workload) else type(model).__name__.lower())


class ModelOptimizer:
    """Compress or migrate one model and compare it with what it was.

    `data`: a Workload (its model is replaced by `model` unless `model` is None) or `{"train", "val"[, "test"]}`
    splits. `target`: a latency target name (`lepton-search targets`) or a LatencyModel; default `host-cpu`.
    Files go to `out_dir` (default: a new temporary folder, kept). `settings`: how candidates are fine-tuned
    (`FinetuneSettings`, as in a search space; by default the model family's recipe, logged when it trains).
    `verbose`: a progress line per stage (prune, fine-tune epoch k of n, export, quantize, measure) on the
    "lepton_search" logger, as `search` writes them (`lepton_search.logging`).
    """

    def __init__(self, model: nn.Module | None, data: Workload | Mapping[str, Any], *,
                 target: str | LatencyModel = "host-cpu", out_dir: str | Path | None = None,
                 settings: FinetuneSettings | None = None, seed: int = 0, verbose: bool = True) -> None:
        self.workload = _as_workload(model, data)
        self.workload.validate()
        self.target = get_target(target) if isinstance(target, str) else target
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="lepton_optimizer_"))
        self.settings = settings or FinetuneSettings()
        self.seed, self.verbose = seed, verbose
        self._before: dict[str, Any] | None = None
        self._graph: Any = None
        self._teacher: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        return self.workload.model

    # ---- the techniques ---------------------------------------------------------------------
    def prune(self, ratio: float, *, method: str = "structured", finetune_epochs: int = 0) -> OptimizeResult:
        """Structured pruning (`method`: structured, global or unstructured), FP32 file."""
        return self.compress(prune_ratio=ratio, bits=32, finetune_epochs=finetune_epochs, prune_method=method)

    def quantize(self, bits: int) -> OptimizeResult:
        """Quantize the unpruned model to `bits` (32, 16, 8 or 4) in ONNX, no training."""
        return self.compress(prune_ratio=0.0, bits=bits, finetune_epochs=0)

    def compress(self, *, prune_ratio: float = 0.0, bits: int = 8, finetune_epochs: int = 1,
                 prune_method: str = "structured", round_to: int = 1, **knobs: Any) -> OptimizeResult:
        """Prune -> fine-tune (distillation, QAT at 8 bits) -> export -> quantize: one search trial's candidate.
        `knobs`: any other knob of the table by name (`embedding_bits=4`, `embedding_dim=0.5`), checked as a
        space checks it."""
        for name, value in knobs.items():
            KNOBS[name].parse(value)  # an unknown knob or a bad value: one line naming it
        asked = CompressionConfig(prune_ratio=prune_ratio, bits=bits, finetune_epochs=finetune_epochs,
                                  prune_method=prune_method, round_to=round_to, **knobs)
        with verbosity(self.verbose), scope(asked.label()):
            # what `search` refuses, refused here; a value it would fix with a warning, fixed here too
            config = checked_config(self.workload, asked, settings=self.settings, graph=self._base_graph(),
                                    verbose=self.verbose)
            settings = recipe_for(self.model, self.settings)
            if config.finetune_epochs > 0:
                logger.info("fine-tune recipe: %s", describe_recipe(settings, len(self.workload.dataset("train"))))
            before, kept = self._before_row(), []
            path = self.out_dir / f"{config.label().replace('/', '_')}.onnx"
            cand = compress(self.workload, config, path, settings=settings, seed=self.seed, on_model=kept.append,
                            teacher=self._cached_teacher())
            with stage("measure (accuracy of the file, latency)"):
                # the candidate's own inputs (a seq_len file is fed cut batches and timed on cut samples)
                meas = evaluate(cand, self.workload, self.target, with_test=self.workload.test is not None)
                after = self._row(config.label(), meas, cand.finetune_seconds_total, cand.params, cand.macs)
        table = _table(before, after, self.workload.task.metric)
        # the file runs the torch model as it is where no graph-stage technique changed its arithmetic
        float_file = not any(t.active(config) for t in registered() if t.stage == "graph")
        return OptimizeResult(kept[0] if float_file else None, path, table, self.workload, cand)

    def migrate(self, *, num_classes: int, data: Workload | Mapping[str, Any] | None = None,
                **kwargs: Any) -> OptimizeResult:
        """Fine-tune this model from its weights (or `weights=PATH`) on `data` (default: the optimizer's) with
        a new head (`workloads.transfer.migrate`; its keyword arguments pass through). The migrated model
        becomes this optimizer's model: later calls compress it, and compare with it."""
        before = self._before_row()
        kwargs.setdefault("verbose", self.verbose)
        wl = migrate(self.model, data if data is not None else self.workload, num_classes=num_classes, **kwargs)
        path = self.out_dir / "migrated.onnx"
        export.to_onnx(wl.model, wl.example_args, path, names=wl.input_names)
        macs, params = prune.count(wl.model, wl.example_args)
        self.workload, self._before = wl, None
        self._graph = self._teacher = None
        after = self._row("migrated", self._measure(path), wl.info.get("train_seconds", math.nan), params, macs)
        return OptimizeResult(wl.model, path, _table(before, after, self.workload.task.metric), wl)

    # ---- measurements -----------------------------------------------------------------------
    def _cached_teacher(self) -> nn.Module:
        """One teacher for every call, its outputs per training sample computed once, as a search's trials share
        theirs (`finetune.CachedTeacher`): the same config gives the search trial's file."""
        if self._teacher is None:
            self._teacher = CachedTeacher(frozen_copy(self.model), self.workload.task.compact_teacher)
        return self._teacher

    def _base_graph(self) -> Any:
        """The current model's FP32 graph, exported once to `base.onnx` (until a migration replaces the model):
        what the techniques' checks read, as `study.prepare` gives them, and the file the `before` row measures."""
        if self._graph is None:
            wl = self.workload
            self._graph = export.to_onnx(wl.model, wl.example_args, self.out_dir / "base.onnx", names=wl.input_names,
                                         with_past=wl.generation, graph=wl.generation_graph)
        return self._graph

    def _measure(self, path: Path) -> Measurement:
        return measure_onnx(path, self.workload, self.target, with_test=self.workload.test is not None)

    def _row(self, label: str, meas: Measurement, training_s: float, params: int, macs: int) -> dict[str, Any]:
        task = self.workload.task  # the task's metric as a person reads it (RMSE, not the stored -RMSE)
        test = None if meas.test_accuracy is None else task.display(meas.test_accuracy)
        return {"config": label, "accuracy": task.display(meas.accuracy), "test_accuracy": test,
                "training_s": training_s, "latency_ms": meas.latency_ms, "size_mb": meas.size_mb,
                "params": params, "macs": macs}

    def _before_row(self) -> dict[str, Any]:
        """The current model, exported FP32 and measured once (until a migration replaces it)."""
        if self._before is None:
            self._base_graph()
            path, wl = self.out_dir / "base.onnx", self.workload
            macs, params = prune.count(wl.model, wl.example_args)
            with stage("measure the base (FP32)"):
                self._before = self._row("base", self._measure(path), self.workload.info.get("train_seconds", math.nan),
                                         params, macs)
        return self._before


def _table(before: dict[str, Any], after: dict[str, Any], metric: str = "accuracy") -> pd.DataFrame:
    """Rows before/after; for a task other than classification, `accuracy` and `test_accuracy` are named after
    its metric (`rmse`, `test_rmse`)."""
    table = pd.DataFrame([before, after], index=["before", "after"], columns=list(COLUMNS))
    return table if metric == "accuracy" else table.rename(columns={"accuracy": metric,
                                                                    "test_accuracy": f"test_{metric}"})
