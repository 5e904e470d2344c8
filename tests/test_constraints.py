"""One set of constraint names on every trial of a study: fresh, resumed, and written by older versions.

Optuna 5.1's GPSampler fails every trial of a study whose trials carry different constraint names, and every
sampler reads each name as one constraint (TPE and NSGA-II sum the violations, GP models each one). Optuna
reads the older list form (`constraints`, what optuna-dashboard 0.21 shows) as names "0", "1", ... and the
named form (`set_constraint`) by name, both at once when a trial has both.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import optuna
import pytest

from lepton_search import FinetuneSettings, SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.records import CONSTRAINT_LAYOUT, DOMINATED, ConstraintLayout, trial_constraints

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Both budgets generous (they hold), the early-rejection rule on: three constraints on every trial.
CONSTRAINED = {"prune_ratio": (0.0, 0.5, 0.25), "bits": (32, 8), "finetune_epochs": (0, 1),
               "max_accuracy_drop_pts": 50.0, "max_latency_ms": 1e3, "early_reject": "dominated"}


def _samplers() -> dict[str, optuna.samplers.BaseSampler]:
    """Each sampler with its model-based phase reached within a few trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {"tpe": optuna.samplers.TPESampler(seed=0, n_startup_trials=2, multivariate=True),
                "gp": optuna.samplers.GPSampler(seed=0, n_startup_trials=2),
                "nsga2": optuna.samplers.NSGAIISampler(seed=0, population_size=2),
                "random": optuna.samplers.RandomSampler(seed=0)}


def _names(study: optuna.Study) -> set[frozenset[str]]:
    """The constraint names samplers see, one entry per distinct set among COMPLETE trials."""
    return {frozenset(t.constraints) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


# ---- the layout on its own (no search) ------------------------------------------------------------------------
def test_a_schema1_trial_is_read_under_todays_names():
    attrs = {"constraints:accuracy_drop_pts": -2.0, "constraints": [-2.0]}
    layout = ConstraintLayout.infer(attrs)
    assert layout == ConstraintLayout(("max_accuracy_drop_pts",), ("accuracy_drop_pts",))
    # new trials are written as the old ones were: both forms, under the old name
    assert layout.system_attrs({"max_accuracy_drop_pts": 1.5, DOMINATED: 0.0}) == {
        "constraints": [1.5], "constraints:accuracy_drop_pts": 1.5}


def test_a_schema2_trial_keeps_its_list_order():
    attrs = {f"constraints:{DOMINATED}": 1.0, "constraints:max_latency_ms": -3.0,
             "constraints:max_accuracy_drop_pts": -1.0, "constraints": [-1.0, -3.0, 1.0]}
    layout = ConstraintLayout.infer(attrs)
    assert layout.names == ("max_accuracy_drop_pts", "max_latency_ms", DOMINATED) == layout.named
    trial = optuna.trial.create_trial(values=[0.9, 1.0], system_attrs=attrs)
    assert layout.read(trial) == {"max_accuracy_drop_pts": -1.0, "max_latency_ms": -3.0, DOMINATED: 1.0}


def test_constraints_not_written_by_this_package_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"study: .*'my_limit'.*start a new study"):
        ConstraintLayout.infer({"constraints:my_limit": 1.0, "constraints": [1.0]})
    with pytest.raises(ConfigError, match="start a new study"):
        ConstraintLayout.infer({"constraints": [1.0, 2.0]})  # a list nobody named


def test_a_fresh_layout_writes_the_list_form_only():
    layout = ConstraintLayout.fresh(["max_size_mb", DOMINATED])
    assert layout.system_attrs({"max_size_mb": -0.5, DOMINATED: 1.0, "max_latency_ms": 9.0}) == {
        "constraints": [-0.5, 1.0]}
    assert ConstraintLayout.fresh([]).system_attrs({DOMINATED: 1.0}) == {}  # no constraint: none written


# ---- real searches -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, constrained", [
    ("gp", True),  # the sampler that refuses mixed names; the others (seconds each) run in `make test`
    *[pytest.param(n, c, marks=pytest.mark.slow) for n, c in
      [("tpe", True), ("nsga2", True), ("random", True), ("tpe", False), ("gp", False), ("nsga2", False),
       ("random", False)]]])
def test_a_fresh_study_gives_every_trial_the_same_names(digits_mlp, sqlite_url, name, constrained):
    kwargs = CONSTRAINED if constrained else {**CONSTRAINED, "max_accuracy_drop_pts": None, "max_latency_ms": None,
                                              "early_reject": "off"}
    space = SearchSpace(**kwargs, trials=5)
    result = search(digits_mlp, space, n_trials=5, storage=sqlite_url, study_name=name, sampler=_samplers()[name],
                    verbose=False, callbacks=[])
    complete = _complete(result.study)
    assert len(complete) == 5, [t.user_attrs.get("fail_reason") for t in result.study.trials]
    assert _names(result.study) == ({frozenset({"0", "1", "2"})} if constrained else {frozenset()})
    layout = result.study.user_attrs[CONSTRAINT_LAYOUT]
    assert layout == {"names": ["max_accuracy_drop_pts", "max_latency_ms", DOMINATED] if constrained else [],
                      "named": []}
    for t in complete:  # the dashboard's list is there exactly when there are constraints
        assert ("constraints" in t.system_attrs) == constrained


def _copy(fixture: str, tmp_path: Path) -> tuple[str, Path]:
    shutil.copytree(FIXTURES / fixture, tmp_path / fixture)
    return f"sqlite:///{tmp_path / fixture / 'study.db'}", tmp_path / fixture / "artifacts"


# The fine-tune settings the fixtures were stored with (the Python defaults before they followed default.yaml).
OLD_FINETUNE = FinetuneSettings(subset_size=8000, batch_size=128, lr=0.01, optimizer="sgd")
V1_SPACE = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1),
                       max_accuracy_drop_pts=3.0, trials=4, sampler="random", finetune=OLD_FINETUNE)
V2_SPACE = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1),
                       max_accuracy_drop_pts=3.0, max_latency_ms=10.0, early_reject="dominated", trials=4,
                       sampler="tpe", finetune=OLD_FINETUNE)
FIXTURE_NAMES = {  # what Optuna reads on each fixture's trials (list positions and names, both forms)
    "v1": frozenset({"0", "accuracy_drop_pts"}),
    "v2": frozenset({"0", "1", "2", "max_accuracy_drop_pts", "max_latency_ms", DOMINATED}),
}


@pytest.mark.parametrize("name", [
    "gp",  # the one that failed every trial under Optuna 5.1
    pytest.param("tpe", marks=pytest.mark.slow), pytest.param("nsga2", marks=pytest.mark.slow),
    pytest.param("random", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fixture, space", [("v1", V1_SPACE), ("v2", V2_SPACE)])
def test_an_older_study_resumes_with_the_names_it_has(digits_mlp, tmp_path, fixture, space, name):
    storage, artifacts = _copy(f"{fixture}_study", tmp_path)
    assert _names(optuna.load_study(study_name=fixture, storage=storage)) == {FIXTURE_NAMES[fixture]}
    result = search(digits_mlp, space, n_trials=6, storage=storage, study_name=fixture, artifacts=artifacts,
                    sampler=_samplers()[name], verbose=False, callbacks=[], remeasure=False)
    complete = _complete(result.study)
    assert len(complete) == 6, [t.user_attrs.get("fail_reason") for t in result.study.trials]
    assert _names(result.study) == {FIXTURE_NAMES[fixture]}
    # this package reads every trial, old or new, under today's names; the v1 study predates the rejection rule,
    # so it gets no such constraint (a rejection still stores its reason)
    expected = {"max_accuracy_drop_pts"} | ({"max_latency_ms", DOMINATED} if fixture == "v2" else set())
    assert all(trial_constraints(result.study, t).keys() == expected for t in complete)
