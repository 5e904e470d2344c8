"""The front door: `search` runs (or resumes) a study, `load` reads one back; both return a SearchResult."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna

from lepton_search import workloads
from lepton_search.default_spaces import default_space_for
from lepton_search.errors import ConfigError
from lepton_search.faults import PoliteStop, ReconnectSettings, answered
from lepton_search.latency import LatencyModel
from lepton_search.logging import logger, stage, verbosity
from lepton_search.results.card import upload_trial_files
from lepton_search.results.notes import RoleNotes
from lepton_search.results.remeasure import remeasure_front
from lepton_search.results.result import SearchResult
from lepton_search.space import SearchSpace, default_space
from lepton_search.storage import DEFAULT_STORAGE, TrialFiles, artifact_store_for
from lepton_search.study import TrialCallback, check_target, make_target, run_study, storage_label
from lepton_search.workloads import Workload


def search(
    workload: Workload | str, space: SearchSpace | None = None, *, target: str | LatencyModel = "host-cpu",
    n_trials: int | None = None, storage: str | None = None, study_name: str | None = None,
    seed: int | None = None, sampler: optuna.samplers.BaseSampler | None = None,
    artifacts: str | Path | None = None, callbacks: Sequence[TrialCallback] | None = None,
    timeout: float | None = None, remeasure: bool = True, verbose: bool = True,
    grace_s: float = 60.0, reconnect: ReconnectSettings | None = None,
) -> SearchResult:
    """Search the space's knobs (prune ratio x bit width x fine-tune epochs ...); return the study's SearchResult.

    `n_trials` is the number of COMPLETE trials the study should reach (a resumed study counts the
    ones it has). Duplicated configs are PRUNED and do not count. `callbacks` run after every trial
    (Optuna's `(study, frozen_trial)` form); None means the default, the optuna-dashboard notes that
    name each Pareto trial's role (`RoleNotes`); `[]` runs none. `timeout` (seconds) is a wall-clock
    budget for this call, checked between trials. With `remeasure` (and a measured target) the base and
    every Pareto point are timed again at the end, interleaved, min of 3 (`results.remeasure`). On SIGTERM /
    SIGINT the running trial may finish within `grace_s` seconds, then `faults.Stopped` is raised (resumable);
    a database that goes away is waited for as `reconnect` says (`faults.ReconnectSettings`).

    Example:
        >>> result = search("digits-mlp", SearchSpace(bits=(32, 8), finetune_epochs=(0, 1)), n_trials=3)  # doctest: +SKIP
        >>> result.pareto()  # doctest: +SKIP
    """
    if space is None:  # the default of the workload's kind of model (`default_spaces`): the workload first
        make_target(target, default_space())  # an unknown target fails before any data is loaded
        if isinstance(workload, str):
            workload = workloads.get(workload)
        space, why = default_space_for(workload)
        with verbosity(verbose):
            logger.info(f"space: {why}; pass a SearchSpace to choose another")
    seed = space.seed if seed is None else seed
    n_trials = space.trials if n_trials is None else n_trials
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError("n_trials", n_trials, "must be an integer >= 1")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError("timeout", timeout, "give a number of seconds > 0, or None for no limit")
    PoliteStop(grace_s)  # checks grace_s
    latency_model = make_target(target, space)
    check_target(space, latency_model)  # before any workload is built
    storage = storage or DEFAULT_STORAGE
    store = TrialFiles(artifact_store_for(storage, artifacts))
    with verbosity(verbose):  # progress lines at INFO for this call (`lepton_search.logging`)
        if isinstance(workload, str):
            workload = workloads.get(workload)
        if callbacks is None:
            callbacks = [RoleNotes(store, storage)]
        study = run_study(workload, space, target=latency_model, n_trials=n_trials, storage=storage,
                          study_name=study_name or workload.name, seed=seed, sampler=sampler, store=store,
                          callbacks=callbacks, verbose=verbose, timeout_s=timeout, checkpoints=store.checkpoints(),
                          grace_s=grace_s, reconnect=reconnect,
                          after_trial=lambda trial, folder: upload_trial_files(trial, store, folder))
        result = SearchResult(study, store)
        if remeasure:
            with stage("re-measured the base and the Pareto front, interleaved"):
                # its reads and its one write wait for a database that went away, as the search's calls do (made
                # again whole: the timings are repeated, the stored figures overwritten)
                answered(lambda: remeasure_front(result, latency_model, workload.sample_inputs()),
                         reconnect or ReconnectSettings(), storage_label(storage))
    return result


def load(storage: str, study_name: str, *, artifacts: str | Path | None = None) -> SearchResult:
    """Open a stored study for reading (and for `export`, `retarget`, the dashboard).

    Example:
        >>> load("sqlite:///lepton_search.db", "fashion-mnist-cnn").pareto()  # doctest: +SKIP
    """
    return SearchResult.open(storage, study_name, artifacts=artifacts)
