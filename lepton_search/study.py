"""The study loop: open (or resume) an Optuna study, measure the base once, run trials.

One trial is suggest -> compress -> evaluate -> store (a `TrialRecord`). Nothing here reads results back or
draws anything; what should happen after each trial (dashboard notes, say) comes in as Optuna callbacks.
`lepton_search.api.search` ties this to a `SearchResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import math
import os
import random
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import optuna

from lepton_search import records, samplers
from lepton_search.candidate import InputTransform, compress, input_transform_for
from lepton_search.errors import ConfigError
from lepton_search.evaluate import evaluate, measure_onnx
from lepton_search.faults import (
    PoliteStop,
    ReconnectSettings,
    Stopped,
    TrialInterrupted,
    answered,
    as_disk_full,
    first_line,
    is_connection_lost,
    is_database_full,
    is_disk_full,
    wait_for_database,
)
from lepton_search.graphs import GraphLatencies, distinct_models, is_base, model_config
from lepton_search.latency import SAMPLE_INPUTS_FILE, LatencyModel, latency_target, save_inputs
from lepton_search.logging import log_stage, logger, scope, stage, verbosity
from lepton_search.records import BaseRecord, TrialRecord
from lepton_search.rejection import EarlyRejection
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.storage import TrialFiles, open_storage, redact
from lepton_search.techniques import export, families, finetune, prune, stages
from lepton_search.techniques.checkpoints import CheckpointStore, weights_digest
from lepton_search.training import progress
from lepton_search.workloads import Workload

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
BASE_TRIAL = -1  # `duplicate_of` a config that is the base itself (results.pick.BASE_TRIAL names the same)
# How setup makes a storage call: `steady(lambda: ...)` answers it, waiting for a restarting database as the
# trial loop does (`faults.answered` with the user's ReconnectSettings); `_direct` calls it once.
Steady = Callable[[Callable[[], Any]], Any]


def _direct(call: Callable[[], Any]) -> Any:
    return call()


def steady_calls(reconnect: ReconnectSettings | None, where: str) -> Steady:
    """The `Steady` of a search or worker setup: each storage call waits for the database (bounded, logged)."""
    settings = reconnect or ReconnectSettings()
    return lambda call: answered(call, settings, where)


TRIAL_DELAY_ENV = "LEPTON_SEARCH_TRIAL_DELAY_S"  # seconds each trial waits after it starts (crash drills)
DEFAULT_GRACE_S = 60.0  # after SIGTERM / SIGINT, how long the running trial may take to finish


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None when it is gone.
    A pid alone can be reused; pid + start time names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _process_start(os.getpid())}


def _dead_here(owner: Any) -> bool:
    """True when `owner` ran on this host and that process no longer exists."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname() or owner.get("start") is None:
        return False
    return _process_start(int(owner["pid"])) != owner["start"]


def fail_dead_trials(study: optuna.Study, storage: str | optuna.storages.BaseStorage, *,
                     running_here: int | None = None, requeue: bool = True) -> list[int]:
    """Fail each RUNNING trial whose owner process on this host is dead, and queue its params again at once.

    Heartbeats find a dead worker only after their grace period (60 s); a search resumed right after a
    kill would otherwise see the killed trial RUNNING and skip its config as a duplicate. `running_here`:
    the caller's own trial, never failed (a heartbeat retry starts with its dead ancestor's attrs, owner too).
    `storage`: the one the study was opened with (Optuna 5.1 has no public `Study.storage`). `requeue`: False when
    the study has its count already (a worker's last sweep): the trial is failed, nothing more is queued.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number == running_here or not _dead_here(records.owner(t)):
            continue
        try:
            records.fail_running(study, storage, t.number, "its process died (killed or crashed)"
                                 + ("; retried" if requeue else "; not retried: the study has its trials"))
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):  # "Cannot tell a FAIL trial"
            continue  # another worker swept it first (and queued its retry): 16 workers saw one kill at once
        if requeue:
            study.enqueue_trial(t.params, user_attrs=records.retry_attrs(t.number))
        failed.append(t.number)
    return failed

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
    """The latency target `target` (`host-cpu` timed with the space's latency settings)."""
    return latency_target(target, dataclasses.asdict(space.latency))


def make_sampler(space: SearchSpace, seed: int, *, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The space's sampler (`samplers.SAMPLER_REGISTRY`); `parallel`: for a worker sharing the study with others."""
    return samplers.make_sampler(space.sampler, seed=seed, parallel=parallel)


def check_study_name(study_name: str) -> None:
    if not _NAME_RE.match(study_name):
        raise ConfigError("study_name", study_name, "use letters, digits, '_', '-', '.' (no path separators)")


def open_study(storage: str | optuna.storages.BaseStorage, study_name: str, space: SearchSpace,
               sampler: optuna.samplers.BaseSampler, *, score_name: str = "accuracy") -> optuna.Study:
    """Create or resume the study; refuse to resume one created with a different search space. `score_name`:
    what the dashboard calls the task's score (the `accuracy` objective): `neg_rmse` for a regressor."""
    check_study_name(study_name)
    storage_obj = open_storage(storage) if isinstance(storage, str) else storage  # heartbeats + retry
    try:
        study = optuna.create_study(storage=storage_obj, study_name=study_name, directions=space.directions,
                                    sampler=sampler, load_if_exists=True)
    except ValueError as exc:  # directions of an existing study differ
        raise ConfigError("study_name", study_name, f"exists with other objectives ({exc}); pick a new --study") from None
    except Exception as exc:  # noqa: BLE001 - sqlalchemy / driver errors
        raise ConfigError("storage", redact(str(storage)), f"cannot open it ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    stored = records.study_space(study)
    if stored is not None and not same_space(stored, space):
        raise ConfigError("study_name", study_name, f"was created with a different search space ({space_diff(stored, space)}); "
                          "use a new --study name, or the stored space")
    if stored is None:  # the names first, the space last: a call cut short between them does both again
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names([score_name if o == "accuracy" else o for o in space.objectives])
        records.set_study_space(study, space.to_dict())
    return study


def same_space(stored: dict, space: SearchSpace) -> bool:
    """Whether a study stored with space `stored` (a `to_dict()`) may resume under `space`."""
    return _identity(_normalised(stored)) == _identity(space.to_dict())


def space_diff(stored: dict, space: SearchSpace, limit: int = 3) -> str:
    """The first fields where `space` differs from a stored space, e.g. "finetune.batch_size: stored 128, given 16"."""
    def flat(d: dict, prefix: str = "") -> dict:
        return {k2: v2 for k, v in d.items()
                for k2, v2 in (flat(v, f"{prefix}{k}.").items() if isinstance(v, dict) else [(f"{prefix}{k}", v)])}
    old, new = flat(_identity(_normalised(stored))), flat(_identity(space.to_dict()))
    diffs = [f"{k}: stored {old.get(k)!r}, given {new.get(k)!r}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
    return "; ".join(diffs[:limit]) + (f"; {len(diffs) - limit} more" if len(diffs) > limit else "")


def _normalised(stored: dict) -> dict:
    """A stored space in today's form: knobs added since it was stored take their defaults; a fine-tune section
    stored before `finetune.optimizer` existed trained with SGD (then the only optimizer)."""
    finetune = stored.get("finetune")
    if isinstance(finetune, dict) and "optimizer" not in finetune:
        stored = {**stored, "finetune": {**finetune, "optimizer": "sgd"}}
    try:
        return SearchSpace.from_dict(stored, source="stored space").to_dict()
    except ConfigError:
        return stored


def _identity(space: dict) -> dict:
    """What must match to resume a study: everything but the trial budget and the anchors (they act only on a
    study with no trial yet)."""
    return {k: v for k, v in space.items() if k not in ("trials", "anchors")}


def measure_base(study: optuna.Study, workload: Workload, target: LatencyModel, store: TrialFiles | Any,
                 work_dir: Path, *, steady: Steady = _direct) -> BaseRecord:
    """The unpruned FP32 model's metrics, measured once per study and stored with it. `steady`: how each storage
    call is made (a database away meanwhile is waited for; the measurement is not repeated)."""
    stored = steady(lambda: BaseRecord.of(study))
    if stored is not None:
        return stored
    started = time.perf_counter()
    x = workload.example_args
    path = work_dir / "base.onnx"
    export.to_onnx(workload.model, x, path, names=workload.input_names, with_past=workload.generation,
                   graph=workload.generation_graph)
    # The samples every latency of this study is timed on (measure_onnx takes the same ones), kept for
    # `measure` and `retarget` elsewhere.
    samples = save_inputs(work_dir / SAMPLE_INPUTS_FILE, workload.sample_inputs())
    meas = measure_onnx(path, workload, target, with_test=True)
    macs, params = prune.count(workload.model, x)
    files = TrialFiles.of(store)
    # an upload cut short by the database is made again: its first copy stays in the store, unreferenced
    artifact_id, samples_id = steady(lambda: files.upload(study, path)), steady(lambda: files.upload(study, samples))
    base = BaseRecord(**BaseRecord.measured(meas), macs=macs, params=params, onnx_artifact_id=artifact_id,
                      target=target.describe(), workload=workload.name, family=workload.family,
                      workload_info=dict(workload.info),
                      inputs=workload.describe_inputs(), sequence_length=workload.seq_len,
                      sample_inputs_artifact_id=samples_id, task=workload.task.describe(),
                      measure_seconds=round(time.perf_counter() - started, 3))
    steady(lambda: base.write(study))
    return base


_TAKEN = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def find_duplicate(study: optuna.Study, config: CompressionConfig, number: int, ignore: Collection[int] = ()) -> int | None:
    """The number of another trial with this config that is done, queued (a heartbeat retry), or running with a
    lower number; `ignore`: retried ancestors. Of two trials running the same config (two workers sampled it at
    once), the lower number goes on and the higher one yields: each sees the other's config, same rule."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    made = model_config(config)  # a knob that acts on nothing (prune_method at ratio 0) makes no other model
    for t in study.get_trials(deepcopy=False, states=states):
        if t.number == number or t.number in ignore:
            continue
        if t.state == optuna.trial.TrialState.RUNNING and t.number > number:
            continue
        stored = records.trial_config(t)
        if stored is not None and (stored == config.as_dict()
                                   or model_config(CompressionConfig.from_dict(stored)) == made):
            return t.number
    return None


def queue_anchors(study: optuna.Study, space: SearchSpace, n_trials: int | None = None, *,
                  steady: Steady = _direct) -> int:
    """Queue `space.anchor_configs()` (at most `n_trials`) in a study with no trial yet; return how many.

    A resumed study, or one whose caller queued its own configs first, is left as it is. The anchors train
    nothing, so they cost seconds; quantization alone is the point every front is judged against, and it gives
    the early-rejection rule a point near the base's accuracy before any config trains (on the 130-config
    search-efficiency grid every sampler then reached 95% of the grid's hypervolume in about half the seconds).
    """
    if steady(lambda: study.get_trials(deepcopy=False)):
        return 0
    anchors = space.anchor_configs()[:n_trials]
    for config in anchors:  # skip_if_exists: one queued before the database went away is not queued twice
        steady(lambda config=config: study.enqueue_trial(space.params(config), skip_if_exists=True))
    return len(anchors)


class Objective:
    """One trial: suggest -> compress -> evaluate -> store. A config seen before is PRUNED."""

    def __init__(self, study: optuna.Study, workload: Workload, space: SearchSpace, target: LatencyModel,
                 base: BaseRecord, store: Any, work_dir: Path, seed: int, verbose: bool = True,
                 after_trial: Callable[[optuna.Trial, Path], None] | None = None,
                 checkpoints: CheckpointStore | None = None, queue_unseen: bool = True) -> None:
        self.study, self.workload, self.space, self.target = study, workload, space, target
        self.base, self.store, self.work_dir, self.seed, self.verbose = base, store, work_dir, seed, verbose
        self.files = TrialFiles.of(store)
        self.after_trial = after_trial  # e.g. upload config.json + MODEL_CARD.md before the trial returns
        # one teacher for every trial, its outputs per training sample computed once (`finetune.CachedTeacher`)
        self.teacher = finetune.CachedTeacher(finetune.frozen_copy(workload.model), workload.task.compact_teacher)
        self.checkpoints = checkpoints  # fine-tuning reuse across trials (None: every trial trains from scratch)
        # One process: a duplicate proposal queues an unseen config, which the loop's next trial takes. Parallel
        # workers stop at their own count and would leave such a queued trial WAITING: they do not queue.
        self.queue_unseen = queue_unseen
        self.base_digest = weights_digest(workload.model)
        self.graphs = GraphLatencies(study, base)  # one graph, one latency in the study (`graphs.py`)
        self.rejection = EarlyRejection(study, space, target, base, workload, self.graphs)
        # Every trial of a study stores the same constraint names (samplers refuse or misread mixed ones): a study
        # begun before the rule (or with it off) keeps the constraints it has; rejections still store their reason.
        wanted = space.set_constraints() + [records.DOMINATED] * self.rejection.rule_on
        self.constraints = records.constraint_layout(study, wanted)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        fail_dead_trials(self.study, trial.storage, running_here=trial.number)  # a dead process's config is free again, at once
        config = self.space.suggest(trial)
        # The config is written BEFORE the duplicate check: two workers that sample the same config at the same
        # moment both see it, and the later trial (higher number) yields (see find_duplicate).
        records.write_config(trial, config)
        # A heartbeat retry copies its stale ancestor's attrs (config_key too): not a duplicate of it.
        if is_base(config):  # the unmodified model, untrained: the base, measured once per study already
            records.mark_duplicate(trial, BASE_TRIAL)
            if self.queue_unseen:
                self._queue_unseen(trial.number)
            raise optuna.TrialPruned(f"config {config.label()} is the unmodified base (measured as the base)")
        dup = find_duplicate(self.study, config, trial.number, ignore=records.retry_history(trial))
        if dup is not None:
            records.mark_duplicate(trial, dup)
            if self.queue_unseen:
                self._queue_unseen(trial.number)
            raise optuna.TrialPruned(f"config {config.label()} already evaluated in trial {dup}")
        records.set_owner(trial, this_process())  # after the config: a retry re-runs a whole config
        delay_s = float(os.environ.get(TRIAL_DELAY_ENV, "0") or 0)
        if delay_s:  # crash drills and tests: hold the trial open so a kill lands mid-trial for sure
            time.sleep(delay_s)
        try:
            with scope(f"trial {trial.number} {config.label()}"):
                log_stage("start")
                return self._run(trial, config)
        except (Exception, TrialInterrupted) as exc:
            with contextlib.suppress(Exception):  # the reason is best effort: the database may be what failed
                records.set_fail_reason(trial, first_line(exc, 300))
            raise

    def _queue_unseen(self, number: int) -> None:
        """Queue one config no trial has taken, drawn at random (seeded): a sampler that proposes the same
        point again (GP's acquisition is deterministic; TPE on a small grid) still moves the study on."""
        taken = [model_config(CompressionConfig.from_dict(c)) for t in self.study.get_trials(deepcopy=False, states=_TAKEN)
                 if (c := records.trial_config(t)) is not None]
        free = [c for c in distinct_models(self.space.configs()) if model_config(c) not in taken]
        if free:
            pick = free[random.Random(f"{self.seed}:{number}").randrange(len(free))]
            self.study.enqueue_trial(self.space.params(pick), skip_if_exists=True)

    def inputs_for(self, config: CompressionConfig) -> InputTransform | None:
        """What `config` does to the model's inputs (None: the workload's own; `seq_len` cuts token inputs); the
        candidate then carries its inputs and samples through evaluation, records, export, retarget and
        remeasure."""
        return input_transform_for(self.workload, config)

    def check_reachable(self) -> None:
        """Before any training: a space whose budgets no graph meets untrained is refused in one line
        (`EarlyRejection.check_reachable`; the timings stay the study's)."""
        timed = self.rejection.check_reachable(
            lambda config, i: self._compress_to(self.work_dir / f"budget_probe_{i}.onnx", config))
        if timed and self.verbose:
            logger.info(f"budgets: met by a graph of this space untrained ({timed} graph(s) timed or read first)")

    def _compress(self, trial: optuna.Trial, config: CompressionConfig) -> Any:
        return self._compress_to(self.work_dir / f"trial_{trial.number}.onnx", config)

    def _compress_to(self, path: Path, config: CompressionConfig) -> Any:
        return compress(self.workload, config, path,
                        settings=self.space.finetune, teacher=self.teacher, seed=self.seed,
                        checkpoints=self.checkpoints, horizon=self.space.finetune_epochs[1],
                        base_digest=self.base_digest, input_transform=self.inputs_for(config))

    def _run(self, trial: optuna.Trial, config: CompressionConfig) -> tuple[float, ...]:
        rejected = self.rejection.check(trial, config, self._compress)
        cand, lat, dominated = rejected or (self._compress(trial, config), None, False)
        if lat is None:  # a graph the study timed before (the base's, a chain's other epochs) is not timed again
            known = self.graphs.get(config)
            lat = known.latency if known is not None else self.target.latency(
                cand.onnx_path, dict(cand.sample_inputs) if cand.sample_inputs is not None
                else self.workload.sample_inputs())
        self.graphs.put(config, lat, cand.size_mb, trial.number)
        # Test accuracy is recorded, never an objective; a rejected candidate keeps the latency that rejected it.
        with stage("measure (accuracy of the file, latency)"):
            meas = evaluate(cand, self.workload, self.target, with_test=True, latency=lat)
        values = tuple(meas.objective(o) for o in self.space.objectives)
        if not all(math.isfinite(v) for v in values):  # before anything is stored for this trial
            raise FloatingPointError(f"objective values {values} are not finite")
        record = TrialRecord.build(cand, meas, self.base, seed=self.seed, versions=library_versions(),
                                   task=self.workload.task)
        records.write_record(trial, record)
        violations = self.space.violations(dataclasses.asdict(record))  # feasible when every value is <= 0
        violations[records.DOMINATED] = 1.0 if dominated else 0.0
        self.constraints.write(trial, violations)
        self.files.upload_onnx(trial, cand.onnx_path)
        if cand.input_transform is not None:  # a knob changed the inputs: this file's own samples travel with it
            path = save_inputs(self.work_dir / f"trial_{trial.number}_{SAMPLE_INPUTS_FILE}", dict(cand.sample_inputs))
            self.files.upload_samples(trial, path)
            path.unlink(missing_ok=True)
        elif self.base.sample_inputs_artifact_id is not None:  # the base's samples, as every other file's
            records.set_artifact(trial, records.SAMPLE_INPUTS_ARTIFACT, self.base.sample_inputs_artifact_id)
        if self.after_trial is not None:
            self.after_trial(trial, self.work_dir)
        cand.onnx_path.unlink(missing_ok=True)
        if self.verbose:  # a rejected config says so: its figures are the untrained probe's, nothing trained
            done = f"rejected ({records.rejected(trial)})" if rejected else f"ft {cand.finetune_seconds:.0f}s"
            done += f" [busy host: {meas.busy_host}]" if meas.busy_host else ""
            task = self.workload.task
            logger.info(f"trial {trial.number:3d} {config.label():<22} {task.short} {task.display(meas.accuracy):.4f} "
                        f"(drop {task.format_drop(record.metric_drop)}) p50 {meas.latency_ms:.3f} ms "
                        f"x{record.speedup:.2f} {meas.size_mb:.3f} MB {done}")
        return values


def acting_space(workload: Workload, space: SearchSpace, graph: Any, *, verbose: bool = True) -> SearchSpace:
    """The space without knob values that cannot change this model: every registered technique's check
    (`techniques.stages.check_space`), each dropped value warned of with the reason, each refusal one line.

    Pruning that finds no layer to shrink and quantization that finds no Conv/Gemm/MatMul would otherwise run
    a whole search of identical files (a GRU classifier kept its 0.128 MB in every trial, silently).
    """
    with verbosity(verbose):
        acting, notes = stages.check_space(stages.CheckContext(workload, graph), space)
    for note in notes:
        warnings.warn(f"workload {workload.name!r}: {note}", stacklevel=3)
        if verbose:
            logger.warning(f"warning: workload {workload.name!r}: {note}")
    return acting


def checked_config(workload: Workload, config: CompressionConfig, *, settings: Any, graph: Any,
                   verbose: bool = True) -> CompressionConfig:
    """One config as a search would run it (`ModelOptimizer`'s door): the checks `prepare` runs on a space, on the
    one-point space of `config`; a refusal is the same line, a value fixed with a warning is fixed here too."""
    space = SearchSpace(knobs=config.as_dict(), finetune=settings, anchors="off", early_reject="off")
    return acting_space(workload, space, graph, verbose=verbose).configs()[0]


def check_target(space: SearchSpace, target: LatencyModel) -> None:
    """A price objective needs a priced target (cheap: callers run it before any workload is built, too)."""
    if "usd_per_million_inferences" in space.objectives and target.describe().get("usd_per_hour") is None:
        raise ConfigError("target", target.name, "has no usd_per_hour; pick a priced target (see `targets`) "
                          "or drop the usd_per_million_inferences objective")


def prepare(workload: Workload, space: SearchSpace, target: LatencyModel, work_dir: Path, *,
            verbose: bool = True) -> SearchSpace:
    """What every path refuses before a study is touched (`search` and `lepton-search init` alike): the workload's
    own checks, a target that can price the price objective, a model the exporter can trace, and knob values
    that cannot act on this model (dropped with a warning, or refused). Returns the space the study searches."""
    check_target(space, target)
    given = space.finetune
    workload.validate()
    if workload.task.name != "classification" and space.max_accuracy_drop_pts is not None:
        raise ConfigError("constraints.max_accuracy_drop_pts", space.max_accuracy_drop_pts,
                          f"task {workload.task.name!r} has no accuracy; limit its {workload.task.metric} with "
                          "max_metric_drop (in the metric's own unit)")
    graph = export.check_traceable(workload.model, workload.example_args, work_dir, names=workload.input_names,
                                   with_past=workload.generation, graph=workload.generation_graph)
    space = acting_space(workload, space, graph, verbose=verbose)
    if space.finetune_epochs[1] > 0 and verbose:  # the family's recipe, made concrete (`start` stores it)
        record = families.family_of(workload.model)
        family = f"{record.name} family" if record is not None else "non-Transformer"
        how = "as given" if given.optimizer != "auto" and given.lr is not None else f"the {family} default"
        logger.info("fine-tune recipe (%s; set finetune.optimizer / finetune.lr to change it): %s", how,
                    finetune.describe_recipe(finetune.recipe_for(workload.model, given),
                                             len(workload.dataset("train"))))
    return space


def start(study: optuna.Study, workload: Workload, space: SearchSpace, target: LatencyModel, store: Any,
          work_dir: Path, n_trials: int | None = None, *, steady: Steady = _direct) -> BaseRecord:
    """The base model measured once per study and the anchors queued in a study with no trial yet (both paths)."""
    base = measure_base(study, workload, target, store, work_dir, steady=steady)
    queue_anchors(study, space, n_trials, steady=steady)
    # The space is stored as given ("auto" follows the model); what "auto" became for this model, beside it.
    recipe = dataclasses.asdict(finetune.recipe_for(workload.model, space.finetune))
    steady(lambda: records.set_finetune_recipe(study, recipe))
    return base


def run_study(workload: Workload, space: SearchSpace, *, target: LatencyModel, n_trials: int,
              storage: str | optuna.storages.BaseStorage,
              study_name: str, seed: int, sampler: optuna.samplers.BaseSampler | None, store: Any,
              callbacks: Sequence[TrialCallback], after_trial: Callable[[optuna.Trial, Path], None] | None,
              verbose: bool, timeout_s: float | None = None,
              checkpoints: CheckpointStore | None = None, grace_s: float = DEFAULT_GRACE_S,
              reconnect: ReconnectSettings | None = None) -> optuna.Study:
    """Open or resume the study, measure the base once, run trials until `n_trials` are COMPLETE. Every storage
    call of the setup waits for a database that went away as the trial loop does (`reconnect`)."""
    with verbosity(verbose), tempfile.TemporaryDirectory(prefix="lepton_") as tmp:
        work_dir = Path(tmp)
        space = prepare(workload, space, target, work_dir, verbose=verbose)
        steady = steady_calls(reconnect, redact(storage) if isinstance(storage, str) else storage_label(storage))
        if isinstance(storage, str):
            check_study_name(study_name)  # before the storage is touched, as open_study does
            url = storage
            storage = steady(lambda: open_storage(url))  # heartbeats + retry; kept: failing a dead trial needs it
        opened = storage
        study = steady(lambda: open_study(opened, study_name, space, sampler or make_sampler(space, seed),
                                          score_name=workload.task.score_name))
        base = start(study, workload, space, target, store, work_dir, n_trials, steady=steady)
        objective = steady(lambda: Objective(study, workload, space, target, base, store, work_dir, seed, verbose,
                                             after_trial, checkpoints))
        check_timeout(timeout_s, base)
        steady(objective.check_reachable)
        optimize(study, objective, n_trials, len(distinct_models(space.configs())), callbacks, timeout_s, storage=storage, grace_s=grace_s,
                 reconnect=reconnect)
    return study


def check_timeout(timeout_s: float | None, base: BaseRecord) -> None:
    """A wall-clock budget shorter than the base's own export, evaluation and timing (what every trial does at
    least, before any training) fits no trial: refused in one line before the first."""
    least = base.measure_seconds
    if timeout_s is not None and least is not None and timeout_s < least:
        raise ConfigError("timeout", timeout_s, f"is shorter than one trial: the base's export, evaluation and timing "
                          f"alone took {least:.3g} s here and every trial does as much before any training; give "
                          f"at least {math.ceil(least * 2)} s, or none")


def n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class _InFlight:
    """The trial function, remembering which trial it ran and what it raised (the loop settles that trial when the
    database went away, a signal stopped it, or the disk filled)."""

    def __init__(self, trial: Callable[[optuna.Trial], Any]) -> None:
        self.trial = trial
        self.number: int | None = None
        self.storage: Any = None
        self.error: BaseException | None = None
        self.raised = False  # study.optimize raised: Optuna ran no callbacks for the trial

    def reset(self) -> None:
        self.number, self.error, self.raised = None, None, False

    def __call__(self, trial: optuna.Trial) -> Any:
        self.number, self.storage = trial.number, trial.storage
        try:
            return self.trial(trial)
        except (Exception, KeyboardInterrupt) as exc:
            self.error = exc
            raise


def _settle(study: optuna.Study, storage: Any, number: int, reason: str, callbacks: Sequence[TrialCallback]) -> str:
    """After a trial the loop could not finish cleanly: a RUNNING one is failed with `reason`, a FAIL one (with
    params) is queued again as a retry; a COMPLETE one stays as it is (it counts once). Returns what happened."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    frozen = by_number.get(number)
    if frozen is None:
        return "no trial"
    if frozen.state == optuna.trial.TrialState.RUNNING:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError):
            records.fail_running(study, storage, number, reason)
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}[number]
    if frozen.state == optuna.trial.TrialState.FAIL and frozen.params:
        # once: a settle tried again (the database went away once more meanwhile) finds its retry queued
        if not any(records.retry_of(t) == number for t in by_number.values()):
            study.enqueue_trial(frozen.params, user_attrs=records.retry_attrs(number))
        outcome = f"trial {number} failed and queued again"
    else:
        outcome = f"trial {number} {frozen.state.name.lower()}"
    for callback in callbacks:
        callback(study, frozen)
    return outcome


def storage_label(storage: Any) -> str:
    """The storage as messages name it: its URL, password hidden."""
    url = storage if isinstance(storage, str) else getattr(storage, "url", None)
    return redact(url) if isinstance(url, str) else type(storage).__name__


def _failed_elsewhere(exc: BaseException | None) -> bool:
    """Whether Optuna refused to store a trial's end because another process had failed it already: a write raises
    UpdateFinishedTrialError, the final tell a bare ValueError ("Cannot tell a FAIL trial.", Optuna 5.1), which
    Optuna's own bookkeeping then replaces with an AssertionError when the trial function had returned."""
    for _ in range(4):
        if exc is None:
            return False
        if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) or (
                isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a ")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_trials(study: optuna.Study, trial: Callable[[optuna.Trial], Any], goal: int, *,
               done: Callable[[], int], stop: Callable[[], str | None] = lambda: None,
               callbacks: Sequence[TrialCallback] = (), on_progress: Callable[[int], None] = lambda _: None,
               storage: Any = None, grace_s: float = DEFAULT_GRACE_S,
               reconnect: ReconnectSettings | None = None) -> int:
    """The one trial loop (`search` and every worker): one trial at a time until `done()` reaches `goal` or
    `stop()` gives a reason (logged by the caller), at most `4 * goal + 20` attempts (duplicates, failures).
    Returns `done()` at the end.

    Faults, each settled so that no trial is lost, counted twice or left RUNNING:
    - the database goes away (`reconnect`): wait with backoff, logged; the trial in flight is kept if it was
      stored COMPLETE, else failed and queued again; past the bound, `DatabaseUnavailable` (one line);
    - SIGTERM / SIGINT (`grace_s`): the running trial may finish, else it is failed and queued again; then `Stopped`;
    - a full disk: the trial FAILs with the reason, its config is queued again, then `DiskFull` (one line).
    """
    reconnect = reconnect or ReconnectSettings()
    where = storage_label(storage)
    inflight = _InFlight(trial)

    def probe() -> None:
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))

    def wait(error: BaseException) -> None:
        wait_for_database(probe, reconnect, error, where=where)

    with PoliteStop(grace_s) as stopping:
        try:
            count = answered(done, reconnect, where)
            for attempt in range(4 * goal + 20):
                if count >= goal or stopping.signum is not None or (attempt and answered(stop, reconnect, where)):
                    break
                inflight.reset()
                try:
                    study.optimize(inflight, n_trials=1, catch=(Exception,), gc_after_trial=True,
                                   callbacks=list(callbacks))
                except TrialInterrupted:
                    inflight.raised = True
                except Exception as exc:
                    if _failed_elsewhere(exc):
                        # its heartbeats stopped (the database was away, or a busy host starved the heartbeat thread)
                        # and another worker failed it meanwhile; the retry that worker queued counts, this run not
                        logger.warning(f"trial {inflight.number} was failed as stale by another worker meanwhile; "
                                       "its retry counts instead")
                    elif is_connection_lost(exc) or is_disk_full(exc):
                        inflight.raised, inflight.error = True, inflight.error or exc
                    else:
                        raise
                error = inflight.error
                if stopping.signum is not None:
                    stopping.disarm()
                if error is not None and inflight.number is None and is_disk_full(error):
                    raise as_disk_full(error, where) from None  # before any trial was stored (its ask)
                if error is not None and inflight.number is not None:
                    if is_connection_lost(error):
                        wait(error)
                        # the database may go away again while the trial is settled (three restarts 2 s apart in
                        # the db_restarts drill): settling waits for it as every other call does
                        settle = functools.partial(
                            _settle, study, inflight.storage, inflight.number,
                            f"the database went away mid-trial ({first_line(error, 100)}); retried",
                            callbacks if inflight.raised else ())
                        logger.warning(answered(settle, reconnect, where))
                    elif isinstance(error, TrialInterrupted):
                        logger.warning(_settle(study, inflight.storage, inflight.number, str(error),
                                               callbacks if inflight.raised else ()))
                    elif is_disk_full(error):
                        # a full database may refuse the settling write too: the trial stays RUNNING under its
                        # owner's pid, and the resumed run fails it and queues it again (`fail_dead_trials`)
                        with contextlib.suppress(Exception) if is_database_full(error) else contextlib.nullcontext():
                            _settle(study, inflight.storage, inflight.number, first_line(error, 300), ())
                        raise as_disk_full(error, where) from None
                now = answered(done, reconnect, where)
                on_progress(now - count)
                count = now
        except TrialInterrupted:  # a second signal, or the grace ran out, outside a trial (waiting for the database)
            stopping.disarm()
        if stopping.signum is not None:
            count = answered(done, reconnect, where)
            how = ("the running trial did not finish in time: failed and queued again" if stopping.expired
                   else "the running trial finished or was queued again")
            raise Stopped(f"stopped by {stopping.name}: {how}; {count} of {goal} trials complete, nothing lost; run "
                          "the same command again to resume", 128 + stopping.signum)
    return count


def optimize(study: optuna.Study, objective: Objective, n_trials: int, n_configs: int,
             callbacks: Sequence[TrialCallback] = (), timeout_s: float | None = None, *,
             storage: str | optuna.storages.BaseStorage, grace_s: float = DEFAULT_GRACE_S,
             reconnect: ReconnectSettings | None = None) -> None:
    """Run one trial at a time until `n_trials` (at most every config) are COMPLETE, or until `timeout_s`
    seconds have passed (checked between trials: the first trial always runs, a started one finishes);
    duplicates do not count. `storage`: the study's (see `fail_dead_trials`)."""
    start_s = time.perf_counter()

    def timed_out() -> str | None:
        return "timeout" if timeout_s is not None and time.perf_counter() - start_s >= timeout_s else None

    target = min(n_trials, n_configs)
    steady = steady_calls(reconnect, storage_label(storage))
    # Before the first ask: the sampler must not see a dead process's RUNNING trial as taken. (Workers leave this
    # to the heartbeats, which retry such a trial with its own params, recorded as a retry.)
    steady(lambda: fail_dead_trials(study, storage))
    with progress(target, "trials") as bar:
        bar.update(steady(lambda: n_complete(study)))
        done = run_trials(study, objective, target, done=lambda: n_complete(study), stop=timed_out,
                          callbacks=callbacks, on_progress=bar.update, storage=storage, grace_s=grace_s,
                          reconnect=reconnect)
    if objective.verbose:
        logger.info(f"search: {done} complete trials in study {study.study_name!r} "
                    f"({time.perf_counter() - start_s:.0f}s this run)")
