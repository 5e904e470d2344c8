"""One study, many workers: `init_study` makes the base model once; `run_worker` joins from any process.

    init:    space + workload spec + target -> study user attrs; base metrics (`measure_base`) and the
             base model's state_dict -> study artifacts.
    worker:  state_dict artifact -> the workload's model (never trained here) -> trials, until this
             worker has completed N of them.

Every worker reaches the same Optuna RDB storage (PostgreSQL for many; SQLite on one machine) and the
same artifact store (a shared folder or an S3 bucket). Heartbeats (see `storage.py`) turn a worker that
died mid-trial into a FAIL plus a queued retry with the same params.

Example:
    >>> init_study("sqlite:///s.db", "demo", SearchSpace(bits=(32, 8)), workload="digits-mlp")  # doctest: +SKIP
    >>> run_worker("sqlite:///s.db", "demo", n_trials=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from lepton_search import records, workloads
from lepton_search.default_spaces import default_space_for
from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.faults import DigestMismatch, PoliteStop, ReconnectSettings, is_connection_lost
from lepton_search.graphs import distinct_models
from lepton_search.logging import logger, verbose_call
from lepton_search.records import BaseRecord, WorkerSetup
from lepton_search.results.card import upload_trial_files
from lepton_search.results.notes import RoleNotes
from lepton_search.space import SearchSpace, default_space
from lepton_search.storage import (
    HeartbeatSettings,
    TrialFiles,
    describe_artifact_store,
    open_artifact_store,
    open_storage,
    redact,
)
from lepton_search.study import TRIAL_DELAY_ENV  # noqa: F401 - crash drills set it (re-exported for them)
from lepton_search.workloads import Workload
from lepton_search.workloads._cache import provided_weights

BASE_STATE_ATTR = records.BASE_STATE_ARTIFACT  # the names, for tests and scripts that read a study by hand
REQUESTED_SPACE_ATTR = records.REQUESTED_SPACE


@dataclass(frozen=True)
class WorkloadSpec:
    """How every worker rebuilds the same workload: a built-in name or `package.module:factory`."""

    name: str = "fashion-mnist-cnn"
    data_dir: str | None = None

    def build(self) -> Workload:
        if ":" in self.name:
            return workloads.build_factory(self.name, field="workload")
        if self.data_dir is not None:
            return workloads.get(self.name, data_dir=self.data_dir)
        return workloads.get(self.name)

    def check(self) -> None:
        """Cheap: the name resolves (a factory imports), before any data is read or model trained."""
        if ":" in self.name:
            workloads.load_factory(self.name)
        elif self.name not in workloads.list_workloads():
            raise ConfigError("workload", self.name, f"unknown workload; {did_you_mean(self.name, workloads.list_workloads())}")


@dataclass(frozen=True)
class WorkerReport:
    """What one worker did: trial numbers by final state, and wall time."""

    completed: list[int] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)  # trials this worker ran as a retry of a stale one
    seconds: float = 0.0


@verbose_call
def init_study(
    storage: str, study_name: str, space: SearchSpace | None, *, workload: str = "fashion-mnist-cnn",
    data_dir: str | None = None, target: str = "host-cpu", artifacts: str | Path | None = None,
    reconnect: ReconnectSettings | None = None, verbose: bool = True,
) -> optuna.Study:
    """Create the study and its base model once (idempotent: a second call checks and returns). `space` None: the
    default of the workload's kind of model (`default_spaces`; a study already initialised keeps its own). Each
    storage call waits for a database that went away as `reconnect` says."""
    from lepton_search.paths import safe_name
    from lepton_search.study import (
        check_target,
        make_sampler,
        make_target,
        open_study,
        prepare,
        same_space,
        start,
        steady_calls,
    )

    safe_name("study_name", study_name)
    spec = WorkloadSpec(workload, data_dir)
    spec.check()
    latency_model = make_target(target, space or default_space())  # an unknown target fails before any data is read
    if space is not None:
        check_target(space, latency_model)
    steady = steady_calls(reconnect, redact(storage))
    storage_obj = steady(lambda: open_storage(storage))
    store = open_artifact_store(artifacts, storage)
    names = steady(lambda: {s.study_name for s in storage_obj.get_all_studies()})
    if study_name in names:  # checked before any data is read or model built
        study = steady(lambda: optuna.load_study(study_name=study_name, storage=storage_obj))
        if steady(lambda: records.base_state_artifact(study)) is not None:
            # the space as asked for (the stored one may have had knobs that cannot act dropped)
            asked = steady(lambda: records.requested_space(study))
            setup = steady(lambda: WorkerSetup.read(study))
            if setup.workload != asdict(spec) or setup.target != target or (space is not None
                                                                             and not same_space(asked, space)):
                raise ConfigError("study_name", study_name, f"was initialised with workload {setup.workload}, "
                                  f"target {setup.target!r} and its own space; use a new study name")
            _log(verbose, f"init: study {study_name!r} already initialised; start workers")
            return study
    wl = spec.build()
    if space is None:
        space, why = default_space_for(wl)
        _log(verbose, f"init: space {why}; give a space file to choose another")
        latency_model = make_target(target, space)
        check_target(space, latency_model)
    with tempfile.TemporaryDirectory(prefix="lepton_init_") as tmp:
        work_dir = Path(tmp)
        acting = prepare(wl, space, latency_model, work_dir, verbose=verbose)  # what `search` refuses, refused here
        study = steady(lambda: open_study(storage_obj, study_name, acting, make_sampler(acting, acting.seed),
                                          score_name=wl.task.score_name))
        if acting != space:
            steady(lambda: records.set_requested_space(study, space.to_dict()))
        setup = WorkerSetup(asdict(spec), target, describe_artifact_store(store))
        steady(lambda: setup.write(study))
        # anchors: the first workers take them
        base = start(study, wl, acting, latency_model, store, work_dir, steady=steady)
        state_path = work_dir / "base_state_dict.pt"
        torch.save(wl.model.state_dict(), state_path)
        # last: "initialised"
        artifact_id = steady(lambda: store.upload_base_state(study, state_path, storage=storage_obj))
    _log(verbose, f"init: study {study_name!r} in {redact(storage)}: base accuracy {base.accuracy:.4f}, "
                  f"p50 {base.latency_ms:.3f} ms; base model stored as artifact {artifact_id} in "
                  f"{describe_artifact_store(store)}")
    return study


def load_base_state(study: optuna.Study, store: TrialFiles | Any) -> dict[str, torch.Tensor]:
    """The base model's state_dict, read from the study's artifact with `weights_only=True`, checked against the
    SHA-256 `init` recorded (a study initialised before digests: unchecked)."""
    artifact_id = records.base_state_artifact(study)
    with tempfile.TemporaryDirectory(prefix="lepton_base_") as tmp:
        path = Path(tmp) / "base_state_dict.pt"
        try:
            TrialFiles.of(store).download(artifact_id, path, owners=(study,))
        except DigestMismatch:
            raise
        except Exception as exc:  # missing file / bucket / permissions (the database: raised again below)
            if is_connection_lost(exc):
                raise  # the database, not the store: the caller waits for it
            raise ConfigError("artifacts", describe_artifact_store(store),
                              f"base model artifact {artifact_id} not found there ({type(exc).__name__}); "
                              "pass the store `init` used (a shared folder or s3://BUCKET)") from None
        return torch.load(path, map_location="cpu", weights_only=True)


def join_study(storage_obj: optuna.storages.BaseStorage, storage: str, study_name: str,
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Load an initialised study; a one-line error names the study and the fix when it is not one."""
    from lepton_search.paths import safe_name

    safe_name("study_name", study_name)
    names = [s.study_name for s in storage_obj.get_all_studies()]
    if study_name not in names:
        raise ConfigError("study_name", study_name, f"no such study in {redact(storage)}; run `lepton-search init` "
                          f"first ({did_you_mean(study_name, names)})")
    study = optuna.load_study(study_name=study_name, storage=storage_obj, sampler=sampler)
    if records.base_state_artifact(study) is None:
        raise ConfigError("study_name", study_name, "was not made by `lepton-search init` (no base model stored); "
                          "run `lepton-search init` for it, or use `lepton-search run`")
    return study


@verbose_call
def run_worker(
    storage: str, study_name: str, *, n_trials: int | None = None, artifacts: str | Path | None = None,
    data_dir: str | None = None, seed: int | None = None, heartbeat: HeartbeatSettings | None = None,
    grace_s: float = 60.0, reconnect: ReconnectSettings | None = None, verbose: bool = True,
) -> WorkerReport:
    """Join an initialised study and complete `n_trials` trials in this process (None: until the study
    has the space's `trials` complete). Duplicated configs are PRUNED and do not count.

    SIGTERM / SIGINT let the running trial finish within `grace_s` seconds (else it is failed and queued again),
    then raise `faults.Stopped`; a database that goes away is waited for as `reconnect` says (`study.run_trials`)."""
    from lepton_search.study import Objective, make_target, steady_calls

    PoliteStop(grace_s)  # checks grace_s before anything is loaded
    reconnect = reconnect or ReconnectSettings()
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError("n_trials", n_trials, "must be an integer >= 1")
    steady = steady_calls(reconnect, redact(storage))  # every storage call of the setup waits for the database
    storage_obj = steady(lambda: open_storage(storage, heartbeat))
    study = steady(lambda: join_study(storage_obj, storage, study_name))
    space = SearchSpace.from_dict(steady(lambda: records.study_space(study)), source="study space")
    setup = steady(lambda: WorkerSetup.read(study))
    seed = secrets.randbits(31) if seed is None else seed  # sampler only: workers must not propose in lockstep
    study.sampler = worker_sampler(space, seed)
    spec = WorkloadSpec(**setup.workload)
    if data_dir is not None:
        spec = WorkloadSpec(spec.name, data_dir)
    spec.check()
    latency_model = make_target(setup.target, space)
    store = open_artifact_store(artifacts if artifacts is not None else setup.artifacts, storage)
    state = steady(lambda: load_base_state(study, store))
    with provided_weights(state):
        wl = spec.build()
    wl.model.load_state_dict(state)  # also for user factories that do not go through the cache
    wl.model.eval()
    wl.validate()
    if verbose and storage.startswith("sqlite:"):
        from lepton_search.storage import SQLITE_MANY_WRITERS

        logger.warning(SQLITE_MANY_WRITERS)
    with tempfile.TemporaryDirectory(prefix="lepton_worker_") as tmp:
        # the workload took a while to build: the database may be restarting now; wait for it as the loop does
        objective = steady(lambda: Objective(
            study, wl, space, latency_model, BaseRecord.of(study), store, Path(tmp), space.seed, verbose,
            checkpoints=store.checkpoints(), queue_unseen=False,
            after_trial=lambda trial, folder: upload_trial_files(trial, store, folder)))
        steady(objective.check_reachable)  # the first worker times the probes, the others read the study's timings
        try:
            return _work(study, objective, space, n_trials, verbose, storage_obj, grace_s, reconnect)
        except Exception as exc:
            if "database is locked" in str(exc):  # sqlite3.OperationalError through SQLAlchemy
                raise ConfigError("storage", redact(storage), "SQLite stayed locked by other writers for 60 s; "
                                  "run several workers on PostgreSQL (docs/scale_out.md)") from None
            raise


def worker_sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, made safe for parallel workers (TPE with constant liar)."""
    from lepton_search.study import make_sampler

    return make_sampler(space, seed, parallel=True)


def _work(study: optuna.Study, objective: Any, space: SearchSpace, n_trials: int | None, verbose: bool,
          study_storage: optuna.storages.BaseStorage, grace_s: float = 60.0,
          reconnect: ReconnectSettings | None = None) -> WorkerReport:
    from lepton_search.study import fail_dead_trials, n_complete, run_trials, steady_calls, storage_label

    report = WorkerReport()
    notes = RoleNotes(objective.store, study_storage)
    start = time.perf_counter()
    n_models = len(distinct_models(space.configs()))  # prune_method at ratio 0 makes no other model
    study_goal = min(space.trials, n_models)
    goal = n_trials if n_trials is not None else study_goal
    pid = os.getpid()

    def traced(trial: optuna.Trial) -> Any:
        history = records.retry_history(trial)
        retry_of = history[0] if history else None
        if retry_of is not None:
            report.retried.append(trial.number)
        config = space.suggest(trial)  # the objective's own suggest returns the same values
        _log(verbose, f"worker {pid}: trial {trial.number} start {config.label()}"
                      + (f" (retry of {retry_of})" if retry_of is not None else ""))
        return objective(trial)  # it holds the trial TRIAL_DELAY_ENV seconds in crash drills

    def record(_: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        by_state = {optuna.trial.TrialState.COMPLETE: report.completed, optuna.trial.TrialState.PRUNED: report.pruned}
        by_state.get(frozen.state, report.failed).append(frozen.number)
        _log(verbose, f"worker {pid}: trial {frozen.number} {frozen.state.name.lower()} {frozen.params}")

    def stop() -> str | None:
        evaluated = n_complete(study)
        if evaluated >= n_models:
            _log(verbose, f"worker {pid}: every one of the space's {n_models} models is evaluated; stopping")
            return "every config evaluated"
        return "the study's trials are complete" if n_trials is None and evaluated >= study_goal else None

    run_trials(study, traced, goal, done=lambda: len(report.completed), stop=stop, callbacks=[record, notes],
               storage=study_storage, grace_s=grace_s, reconnect=reconnect)
    # A worker killed on this host near the end leaves a RUNNING trial no later trial here would sweep: fail it now
    # (queued again only while the study still needs trials).
    steady = steady_calls(reconnect, storage_label(study_storage))
    steady(lambda: fail_dead_trials(study, study_storage, requeue=n_complete(study) < study_goal))
    seconds = time.perf_counter() - start
    _log(verbose, f"worker {pid}: {len(report.completed)} complete, {len(report.pruned)} pruned, "
                  f"{len(report.failed)} failed in {seconds:.0f}s")
    return WorkerReport(report.completed, report.pruned, report.failed, report.retried, seconds)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        logger.info(message)
