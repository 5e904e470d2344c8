"""Early rejection: a config whose untrained latency is no faster than a found point at >= the base's accuracy
trains nothing, is stored with its reason and is infeasible for the sampler (`early_reject: dominated`)."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from lepton_search import SearchSpace, search, study
from lepton_search.errors import ConfigError
from lepton_search.latency import LatencyEstimate, LatencyModel
from lepton_search.records import DOMINATED, REJECTED, trial_constraints
from lepton_search.rejection import dominated_before_training
from lepton_search.tasks import Task, accuracy_standard_error


def test_rule_rejects_only_configs_no_faster_than_a_point_at_base_accuracy():
    found = [(1.5, 0.95), (1.0, 0.90), (1.2, 0.94)]
    assert dominated_before_training(2.0, [], base_accuracy=0.94) is None  # nothing found yet
    assert dominated_before_training(1.1, found, base_accuracy=0.94) is None  # faster than both points at >= base
    assert dominated_before_training(0.5, found, base_accuracy=0.80) is None  # faster than everything
    assert dominated_before_training(5.0, found, base_accuracy=0.96) is None  # no point reaches the base
    reason = dominated_before_training(2.0, found, base_accuracy=0.94)
    assert reason is not None and "(2 ms >= 1.2 ms)" in reason  # names the fastest point at >= base accuracy
    assert "accuracy 0.94 is >= the base's 0.94" in reason
    assert dominated_before_training(1.2, found, base_accuracy=0.94) is not None  # equal latency: no faster
    assert dominated_before_training(1.0, found, base_accuracy=0.90) is not None  # equal accuracy counts


def test_rule_tolerance_counts_points_within_it_of_the_base():
    found = [(1.5, 0.937)]  # 0.3 pt below the base
    assert dominated_before_training(2.0, found, base_accuracy=0.94) is None
    assert dominated_before_training(2.0, found, base_accuracy=0.94, tolerance=0.002) is None  # 0.2 pt: not within
    reason = dominated_before_training(2.0, found, base_accuracy=0.94, tolerance=0.0035)
    assert reason is not None and "0.937 is >= the base's 0.94 - 0.0035" in reason
    assert dominated_before_training(1.4, found, base_accuracy=0.94, tolerance=0.0035) is None  # faster: trained


def test_standard_error_of_an_accuracy():
    assert accuracy_standard_error(0.92, 5000) == pytest.approx((0.92 * 0.08 / 5000) ** 0.5)
    assert accuracy_standard_error(1.0, 100) == 0.0  # a perfect base: no tolerance
    assert accuracy_standard_error(1.3, 0) == 0.0  # clamped: a score outside [0, 1] or no samples


@pytest.mark.parametrize("name, default, typo, match", [
    ("early_reject", "dominated", "dominatd", "early_reject.*did you mean 'dominated'"),
    ("anchors", "untrained", "untrainde", "anchors.*untrainde.*did you mean 'untrained'"),
])
def test_on_off_settings_from_yaml_and_bad_values(tmp_path, name, default, typo, match):
    """The space's two on/off settings: the rule and the anchors."""
    assert getattr(SearchSpace(), name) == default
    path = tmp_path / "s.yaml"
    path.write_text(f"{name}: off\n")  # YAML 1.1 reads a bare off as False
    space = SearchSpace.from_yaml(path)
    assert getattr(space, name) == "off"
    assert getattr(SearchSpace.from_dict(space.to_dict()), name) == "off"
    with pytest.raises(ConfigError, match=match):
        SearchSpace(**{name: typo})


class _SameLatency(LatencyModel):
    """Every file takes 1 ms: which config is no faster than which does not depend on timing noise."""

    name, source = "same-latency", "predicted"

    def latency(self, onnx_path, inputs=None):
        return LatencyEstimate(p50_ms=1.0, p90_ms=1.0, source=self.source)


def _search(workload, space, sqlite_url, monkeypatch):
    """ft0 then ft1 of one graph. The base's accuracy is read as 0, so the completed ft0 trial is a point at
    >= the base's accuracy, and ft1 (same graph, same 1 ms) is no faster than it."""
    real = study.measure_base
    monkeypatch.setattr(study, "measure_base", lambda *a, **k: dataclasses.replace(real(*a, **k), accuracy=0.0))
    created = optuna.create_study(storage=sqlite_url, study_name="e", directions=space.directions)
    for epochs in (0, 1):
        created.enqueue_trial({"finetune_epochs": epochs})
    result = search(workload, space, target=_SameLatency(), n_trials=2, storage=sqlite_url, study_name="e",
                    verbose=False, callbacks=[], remeasure=False)
    trials = {t.number: t for t in result.study.get_trials()}
    assert [trials[n].state.name for n in (0, 1)] == ["COMPLETE", "COMPLETE"]
    assert [trials[n].user_attrs["config"]["finetune_epochs"] for n in (0, 1)] == [0, 1]
    return result, trials


def _trained(monkeypatch) -> list[int]:
    """Record each `fit` call that runs a training step (more epochs than it resumes from). The test checks the
    list after the search: an assert in here would only fail the trial, which the search catches."""
    from lepton_search.techniques import finetune

    real, calls = finetune.fit, []

    def fit(*args, epochs, resume=None, **kwargs):
        if epochs > (resume or {}).get("epoch", 0):
            calls.append(epochs)
        return real(*args, epochs=epochs, resume=resume, **kwargs)

    monkeypatch.setattr(finetune, "fit", fit)
    return calls


def test_dominated_config_runs_no_training_step(digits_mlp, sqlite_url, monkeypatch):
    trained = _trained(monkeypatch)
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(32,), finetune_epochs=(0, 1), trials=2)
    result, trials = _search(digits_mlp, space, sqlite_url, monkeypatch)
    assert trained == [], "a config rejected before fine-tuning must run no training step"
    rejected = trials[1]
    assert rejected.user_attrs[REJECTED].startswith("dominated before fine-tuning: no faster than a found point "
                                                    "(1 ms >= 1 ms)")
    assert rejected.user_attrs["finetune_seconds"] == 0 and rejected.user_attrs["finetune_epochs_reused"] == 0
    assert trial_constraints(result.study, rejected)[DOMINATED] == 1.0  # infeasible for the sampler
    assert rejected.constraints == {"0": 1.0}  # what the sampler reads: one name, once
    assert rejected.system_attrs["constraints"] == [1.0]  # the form optuna-dashboard 0.21 reads
    assert REJECTED not in trials[0].user_attrs and trial_constraints(result.study, trials[0])[DOMINATED] == 0.0
    assert list(result.pareto()["number"]) == [0]


@pytest.mark.parametrize("rule, objectives", [("off", ("accuracy", "latency_ms")),
                                              ("dominated", ("accuracy", "latency_ms", "size_mb"))])
def test_rule_off_or_a_third_objective_never_rejects(digits_mlp, sqlite_url, monkeypatch, rule, objectives):
    """A third objective (size here) could put a slower config on the front: the rule stays off there."""
    trained = _trained(monkeypatch)
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(32,), finetune_epochs=(0, 1), trials=2,
                        early_reject=rule, objectives=objectives)
    result, trials = _search(digits_mlp, space, sqlite_url, monkeypatch)
    assert trained == [1]
    for t in trials.values():
        assert REJECTED not in t.user_attrs and not t.constraints and not trial_constraints(result.study, t)
    assert trials[1].user_attrs["finetune_seconds"] > 0



def test_study_tolerance_is_one_standard_error_of_the_validation_split(digits_mlp, sqlite_url, monkeypatch):
    """The study asks for the standard error of the base's accuracy on the validation split's size and passes
    it to the rule: patched to 1 (100 pt), ft1 is rejected whatever the ft0 point's accuracy, and the reason
    names the tolerance."""
    trained = _trained(monkeypatch)
    asked = []
    monkeypatch.setattr(Task, "score_tolerance", lambda self, acc, n: asked.append((acc, n)) or 1.0)
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(32,), finetune_epochs=(0, 1), trials=2)
    created = optuna.create_study(storage=sqlite_url, study_name="t", directions=space.directions)
    for epochs in (0, 1):
        created.enqueue_trial({"finetune_epochs": epochs})
    result = search(digits_mlp, space, target=_SameLatency(), n_trials=2, storage=sqlite_url, study_name="t",
                    verbose=False, callbacks=[], remeasure=False)
    assert asked == [(result.base.accuracy, len(digits_mlp.dataset("val")))]
    assert trained == [], "a config rejected before fine-tuning must run no training step"
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]
    rejected = result.study.trials[1]
    assert rejected.user_attrs[REJECTED].endswith(f"is >= the base's {result.base.accuracy:.4g} - 1")
