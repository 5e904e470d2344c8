"""Anchors: a fresh study first evaluates quantization alone (the unpruned model, untrained, at each bit width
below 32), before its sampler proposes anything (`anchors: untrained`, the default)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig
from lepton_search.study import open_study, queue_anchors
from lepton_search.workers import init_study


def _labels(space: SearchSpace) -> list[tuple[float, int, int]]:
    return [(c.prune_ratio, c.bits, c.finetune_epochs) for c in space.anchor_configs()]


def test_anchor_configs_are_quantization_alone():
    assert _labels(SearchSpace(bits=(32, 8))) == [(0.0, 8, 0)]
    assert _labels(SearchSpace(bits=(32, 16, 8, 4))) == [(0.0, 16, 0), (0.0, 8, 0), (0.0, 4, 0)]
    # method and round_to do nothing at ratio 0: the anchor takes the first of each
    anchor, = SearchSpace(bits=(8,), prune_method=("global", "structured"), round_to=(8, 4)).anchor_configs()
    assert (anchor.prune_method, anchor.round_to) == ("global", 8)


@pytest.mark.parametrize("kwargs, why", [
    ({"bits": (32,)}, "the FP32 unpruned model is the base, measured anyway"),
    ({"prune_ratio": (0.25, 0.5, 0.25)}, "ratio 0 is not in the space"),
    ({"finetune_epochs": (1, 2)}, "0 epochs is not in the space"),
    ({"anchors": "off"}, "turned off"),
])
def test_no_anchor_outside_the_space_or_when_off(kwargs, why):
    assert SearchSpace(**{"bits": (32, 8), **kwargs}).anchor_configs() == [], why


def test_only_a_study_with_no_trial_is_anchored():
    space = SearchSpace(prune_ratio=(0.0, 0.25, 0.25), bits=(32, 16, 8), finetune_epochs=(0, 1))
    fresh = optuna.create_study(directions=space.directions)
    assert queue_anchors(fresh, space, n_trials=1) == 1  # never more than the trials asked for
    waiting = fresh.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [space.params(space.anchor_configs()[0])]
    assert queue_anchors(fresh, space) == 0  # it has a trial now: resumed studies are left as they are
    planned = optuna.create_study(directions=space.directions)
    planned.enqueue_trial({"prune_ratio": 0.25, "bits": 32, "finetune_epochs": 1})
    assert queue_anchors(planned, space) == 0  # a caller that queued its own configs keeps its plan


def _fixed(trial: optuna.trial.FrozenTrial) -> bool:
    return "fixed_params" in trial.system_attrs  # set by enqueue_trial


@pytest.mark.parametrize("anchors", ["untrained", "off"])
def test_search_runs_the_anchor_first_and_trains_nothing_for_it(digits_mlp, sqlite_url, anchors):
    space = SearchSpace(prune_ratio=(0.0, 0.25, 0.25), bits=(32, 8), finetune_epochs=(0, 1), anchors=anchors)
    result = search(digits_mlp, space, n_trials=2, storage=sqlite_url, study_name="a", verbose=False,
                    callbacks=[], remeasure=False)
    first = result.study.trials[0]
    if anchors == "off":
        assert not any(_fixed(t) for t in result.study.trials)
        return
    assert _fixed(first) and first.state == optuna.trial.TrialState.COMPLETE
    assert CompressionConfig.from_dict(first.user_attrs["config"]) == space.anchor_configs()[0]
    assert first.user_attrs["finetune_seconds"] == 0
    assert len(result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2  # counts as a trial


def test_a_study_resumes_with_the_anchors_changed(sqlite_url):
    """Anchors act only when a study is created: changing them does not make the space a different one."""
    space = SearchSpace(prune_ratio=(0.0, 0.25, 0.25), bits=(32, 8), finetune_epochs=(0, 1))
    open_study(sqlite_url, "r", space, optuna.samplers.RandomSampler(seed=0))
    open_study(sqlite_url, "r", dataclasses.replace(space, anchors="off"), optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(ConfigError, match="different search space"):  # a knob that matters still refuses
        open_study(sqlite_url, "r", dataclasses.replace(space, early_reject="off"), optuna.samplers.RandomSampler(seed=0))


def test_init_study_queues_the_anchors_for_the_workers(sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.25, 0.25), bits=(32, 8), finetune_epochs=(0, 1))
    study = init_study(sqlite_url, "w", space, workload="digits-mlp", verbose=False)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [space.params(space.anchor_configs()[0])]
    init_study(sqlite_url, "w", space, workload="digits-mlp", verbose=False)  # idempotent: nothing queued twice
    assert len(study.get_trials()) == 1
