"""search(): run (or resume) an Optuna multi-objective study over a SearchSpace for one Workload."""

from __future__ import annotations

import importlib.metadata
import math
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import optuna

from lepton_search import workloads
from lepton_search.candidate import Candidate, compress
from lepton_search.card import save_role_notes, upload_trial_files
from lepton_search.compress import export, finetune, prune
from lepton_search.errors import ConfigError
from lepton_search.evaluate import evaluate, onnx_accuracy
from lepton_search.latency import LatencyModel, get_target
from lepton_search.progress import progress
from lepton_search.result import SearchResult, artifact_store_for
from lepton_search.space import CompressionConfig, SearchSpace, default_space
from lepton_search.storage import open_storage, redact, retry_history
from lepton_search.workloads import Workload

DEFAULT_STORAGE = "sqlite:///lepton_search.db"
VERSIONED = ("torch", "torch-pruning", "nncf", "onnx", "onnxruntime", "optuna", "lepton-search")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def library_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def make_target(target: str | LatencyModel, space: SearchSpace) -> LatencyModel:
    if isinstance(target, LatencyModel):
        return target
    if target == "host-cpu":
        lat = space.latency
        return get_target(target, threads=lat.threads, batch_size=lat.batch_size, warmup=lat.warmup,
                          runs=lat.runs, max_cv=lat.max_cv, max_repeats=lat.max_repeats)
    return get_target(target)


def make_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True)


def open_study(storage: str | optuna.storages.BaseStorage, study_name: str, space: SearchSpace,
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Create or resume the study; refuse to resume one created with a different search space."""
    if not _NAME_RE.match(study_name):
        raise ConfigError("study_name", study_name, "use letters, digits, '_', '-', '.' (no path separators)")
    storage_obj = open_storage(storage) if isinstance(storage, str) else storage  # heartbeats + retry
    try:
        study = optuna.create_study(storage=storage_obj, study_name=study_name, directions=space.directions,
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # directions of an existing study differ
        raise ConfigError("study_name", study_name, f"exists with other objectives ({exc}); pick a new --study") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy / driver errors
        raise ConfigError("storage", redact(str(storage)), f"cannot open it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    stored = study.user_attrs.get("space")
    if stored is not None and _identity(stored) != _identity(space.to_dict()):
        raise ConfigError("study_name", study_name, "was created with a different search space; use a new --study name")
    if stored is None:
        study.set_user_attr("space", space.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names(list(space.objectives))
    return study


def _identity(space: dict) -> dict:
    """What must match to resume a study: everything but the trial budget."""
    return {k: v for k, v in space.items() if k != "trials"}


def measure_base(study: optuna.Study, workload: Workload, target: LatencyModel, store: Any, work_dir: Path) -> dict:
    """The unpruned FP32 model's metrics, measured once per study and stored with it."""
    if "base" in study.user_attrs:
        return study.user_attrs["base"]
    x = workload.example_input
    path = work_dir / "base.onnx"
    export.to_onnx(workload.model, x, path)
    acc = onnx_accuracy(path, workload, "val")
    test = onnx_accuracy(path, workload, "test").accuracy if workload.test is not None else None
    lat = target.latency(path, tuple(x.shape))
    macs, params = prune.count(workload.model, x)
    artifact_id = optuna.artifacts.upload_artifact(study_or_trial=study, file_path=str(path), artifact_store=store)
    base = {
        "accuracy": acc.accuracy, "val_correct": acc.correct, "val_total": acc.total, "test_accuracy": test,
        "latency_ms": lat.p50_ms, "latency_p90_ms": lat.p90_ms, "latency_cv": lat.cv, "latency_source": lat.source,
        "latency_expected_error_pct": lat.expected_error_pct, "usd_per_million_inferences": lat.usd_per_million_inferences,
        "size_mb": path.stat().st_size / 1e6, "macs": macs, "params": params, "onnx_artifact_id": artifact_id,
        "target": target.describe(), "workload": workload.name, "workload_info": workload.info,
    }
    study.set_user_attr("base", base)
    return base


def find_duplicate(study: optuna.Study, config: CompressionConfig, number: int, ignore: Collection[int] = ()) -> int | None:
    """The number of another trial with this config that is done, running or queued; `ignore`: retried ancestors."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == number or t.number in ignore or t.user_attrs.get("config_key") is None:
            continue
        if tuple(t.user_attrs["config_key"]) == config.key():
            return t.number
    return None


class Objective:
    """One trial: suggest -> compress -> evaluate -> store. A config seen before is PRUNED."""

    def __init__(self, study: optuna.Study, workload: Workload, space: SearchSpace, target: LatencyModel,
                 base: dict, store: Any, work_dir: Path, seed: int, verbose: bool = True) -> None:
        self.study, self.workload, self.space, self.target = study, workload, space, target
        self.base, self.store, self.work_dir, self.seed, self.verbose = base, store, work_dir, seed, verbose
        self.teacher = finetune.frozen_copy(workload.model)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        config = self.space.suggest(trial)
        trial.set_user_attr("prune_method", config.prune_method)
        # A heartbeat retry copies its stale ancestor's attrs (config_key too): not a duplicate of it.
        dup = find_duplicate(self.study, config, trial.number, ignore=retry_history(trial))
        if dup is not None:
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"config {config.label()} already evaluated in trial {dup}")
        trial.set_user_attr("config_key", list(config.key()))
        try:
            return self._run(trial, config)
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
            raise

    def _run(self, trial: optuna.Trial, config: CompressionConfig) -> tuple[float, ...]:
        cand = compress(self.workload, config, self.work_dir / f"trial_{trial.number}.onnx",
                        settings=self.space.finetune, teacher=self.teacher, seed=self.seed)
        meas = evaluate(cand, self.workload, self.target)
        values = tuple(meas.objective(o) for o in self.space.objectives)
        if not all(math.isfinite(v) for v in values):  # before anything is stored for this trial
            raise FloatingPointError(f"objective values {values} are not finite")
        drop_pts = (self.base["accuracy"] - meas.accuracy) * 100
        attrs = _trial_attrs(cand, meas, self.base, drop_pts, self.seed)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        limit = self.space.max_accuracy_drop_pts
        if limit is not None:
            violation = drop_pts - limit  # feasible when <= 0
            trial.set_constraint("accuracy_drop_pts", violation)
            # optuna-dashboard 0.21 only reads the older list form; write both, same value.
            trial.storage.set_trial_system_attr(trial._trial_id, "constraints", [violation])
        artifact_id = optuna.artifacts.upload_artifact(study_or_trial=trial, file_path=str(cand.onnx_path),
                                                       artifact_store=self.store)
        trial.set_user_attr("onnx_artifact_id", artifact_id)
        upload_trial_files(trial, self.store, self.base, self.work_dir)  # config.json + MODEL_CARD.md
        cand.onnx_path.unlink(missing_ok=True)
        if self.verbose:
            print(f"trial {trial.number:3d} {config.label():<22} acc {meas.accuracy:.4f} (drop {drop_pts:+.2f} pt) "
                  f"p50 {meas.latency_ms:.3f} ms x{self.base['latency_ms'] / meas.latency_ms:.2f} "
                  f"{meas.size_mb:.3f} MB ft {cand.finetune_seconds:.0f}s", file=sys.stderr)
        return values


def _trial_attrs(cand: Candidate, meas: Any, base: dict, drop_pts: float, seed: int) -> dict:
    return {
        "accuracy": meas.accuracy, "val_correct": meas.val_correct, "val_total": meas.val_total,
        "accuracy_drop_pts": drop_pts, "latency_ms": meas.latency_ms, "latency_p90_ms": meas.latency_p90_ms,
        "latency_cv": meas.latency_cv, "latency_source": meas.latency_source,
        "latency_expected_error_pct": meas.latency_expected_error_pct, "load_avg_1min": meas.load_avg_1min,
        "threads": meas.threads, "batch_size": meas.batch_size, "size_mb": meas.size_mb,
        "speedup": base["latency_ms"] / meas.latency_ms, "size_ratio": meas.size_mb / base["size_mb"],
        "macs": cand.macs, "params": cand.params, "macs_ratio": cand.macs_ratio, "params_ratio": cand.params_ratio,
        "weight_sparsity": cand.weight_sparsity, "finetune_seconds": cand.finetune_seconds,
        "finetune_subset": cand.finetune_subset,
        "finetune_samples": cand.finetune_samples, "bn_batches": cand.bn_batches,
        "compress_seconds": cand.compress_seconds, "quantization_aware": cand.quantization_aware, "exporter": cand.exporter, "seed": seed,
        "versions": library_versions(),
        "slower_than_base": meas.latency_ms > 0.95 * base["latency_ms"],
        "usd_per_million_inferences": meas.usd_per_million_inferences,
    }


def search(
    workload: Workload | str, space: SearchSpace | None = None, *, target: str | LatencyModel = "host-cpu",
    n_trials: int | None = None, storage: str | None = None, study_name: str | None = None,
    seed: int | None = None, sampler: optuna.samplers.BaseSampler | None = None,
    artifacts: str | Path | None = None, verbose: bool = True,
) -> SearchResult:
    """Search prune ratio x bit width x fine-tune epochs; return the study's SearchResult.

    `n_trials` is the number of COMPLETE trials the study should reach (a resumed study counts the
    ones it has). Duplicated configs are PRUNED and do not count.

    Example:
        >>> result = search("digits-mlp", SearchSpace(bits=(32, 8), finetune_epochs=(0, 1)), n_trials=3)  # doctest: +SKIP
        >>> result.pareto()  # doctest: +SKIP
    """
    space = space or default_space()
    seed = space.seed if seed is None else seed
    n_trials = space.trials if n_trials is None else n_trials
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError("n_trials", n_trials, "must be an integer >= 1")
    latency_model = make_target(target, space)
    if "usd_per_million_inferences" in space.objectives and latency_model.describe().get("usd_per_hour") is None:
        raise ConfigError("target", latency_model.name, "has no usd_per_hour; pick a priced target (see `targets`) "
                          "or drop the usd_per_million_inferences objective")
    storage = storage or DEFAULT_STORAGE
    store = artifact_store_for(storage, artifacts)
    if isinstance(workload, str):
        workload = workloads.get(workload)
    workload.validate()
    study_name = study_name or workload.name
    with tempfile.TemporaryDirectory(prefix="lepton_") as tmp:
        work_dir = Path(tmp)
        export.check_traceable(workload.model, workload.example_input, work_dir)
        study = open_study(storage, study_name, space, sampler or make_sampler(space, seed))
        base = measure_base(study, workload, latency_model, store, work_dir)
        objective = Objective(study, workload, space, latency_model, base, store, work_dir, seed, verbose)
        _optimize(study, objective, n_trials, space.n_configs)
    return SearchResult(study, store)


def _optimize(study: optuna.Study, objective: Objective, n_trials: int, n_configs: int) -> None:
    def n_complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    target = min(n_trials, n_configs)
    attempts, max_attempts = 0, 4 * n_trials + 20
    start = time.perf_counter()
    bar, done = progress(total=target, desc="trials"), n_complete()
    bar.update(done)
    while done < target and attempts < max_attempts:
        attempts += 1
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        save_role_notes(SearchResult(study, objective.store))  # dashboard notes follow the front
        now = n_complete()
        bar.update(now - done)
        done = now
    bar.close()
    if objective.verbose:
        print(f"search: {done} complete trials in study {study.study_name!r} "
              f"({time.perf_counter() - start:.0f}s this run)", file=sys.stderr)
