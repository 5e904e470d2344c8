"""A real 4-trial search on a tiny workload, checked against independent references."""

import json

import numpy as np
import optuna
import pytest

from lepton_search import SearchSpace, load, search
from lepton_search.errors import ConfigError
from lepton_search.evaluate import onnx_accuracy
from lepton_search.records import CONSTRAINT_LAYOUT, DOMINATED, trial_constraints
from lepton_search.results.pareto import non_dominated

SPACE = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8, 4), finetune_epochs=(0, 1),
                    max_accuracy_drop_pts=1.5, sampler="random", seed=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_cnn):
    root = tmp_path_factory.mktemp("search")
    url = f"sqlite:///{root / 'study.db'}"
    result = search(digits_cnn, SPACE, n_trials=4, storage=url, study_name="it", verbose=False)
    return result, url, root, digits_cnn


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_reaches_the_requested_number_of_complete_distinct_trials(run):
    result, *_ = run
    trials = result.trials()
    complete = trials[trials.state == "COMPLETE"]
    assert len(complete) == 4
    keys = {tuple(t.user_attrs["config"].values()) for t in result.study.trials if t.state.name == "COMPLETE"}
    assert len(keys) == 4
    pruned = trials[trials.state == "PRUNED"]
    assert pruned["duplicate_of"].notna().all()


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_stored_accuracy_equals_a_fresh_onnxruntime_run_of_the_artifact(run, tmp_path):
    result, _, _, wl = run
    for t in result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        path = result.export(t.number, tmp_path / f"t{t.number}")
        fresh = onnx_accuracy(path, wl, "val")
        assert fresh.correct == t.user_attrs["val_correct"]
        assert fresh.accuracy == t.user_attrs["accuracy"] == t.values[0]
        cfg = json.loads((tmp_path / f"t{t.number}" / "config.json").read_text())
        assert {k: cfg["config"][k] for k in t.params} == t.params


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_user_attrs_record_measurement_context(run):
    result, *_ = run
    t = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))[0]
    a = t.user_attrs
    assert a["latency_source"] == "measured" and a["threads"] == 1 and a["batch_size"] == 1
    assert 0 < a["latency_ms"] <= a["latency_p90_ms"]
    assert a["versions"]["torch"] and a["versions"]["onnxruntime"] and a["seed"] == 3
    assert a["speedup"] == pytest.approx(result.base.latency_ms / a["latency_ms"])
    assert a["accuracy_drop_pts"] == pytest.approx((result.base.accuracy - a["accuracy"]) * 100)
    assert result.study.metric_names == ["accuracy", "latency_ms"]


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_constraints_one_form_one_set_of_names(run):
    """Optuna's list form only (optuna-dashboard reads it), its positions named by the study's layout: every
    trial shows a sampler the same names, once each."""
    result, *_ = run
    assert result.study.user_attrs[CONSTRAINT_LAYOUT] == {"names": ["max_accuracy_drop_pts", DOMINATED], "named": []}
    for t in result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert t.constraints.keys() == {"0", "1"}
        drop, dominated = t.system_attrs["constraints"]
        # the early-rejection constraint rides along (0 unless the rule rejected the config)
        assert trial_constraints(result.study, t) == {"max_accuracy_drop_pts": drop, DOMINATED: dominated}
        assert (drop <= 0) == (t.user_attrs["accuracy_drop_pts"] <= SPACE.max_accuracy_drop_pts)


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_pareto_matches_optuna_best_trials_among_feasible(run):
    result, *_ = run
    front = set(result.pareto()["number"])
    feasible = [t for t in result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                if all(v <= 0 for v in t.constraints.values())]
    values = np.array([t.values for t in feasible])
    mask = non_dominated(values, ["maximize", "minimize"])
    assert front == {t.number for t, m in zip(feasible, mask) if m}
    # optuna's own front, restricted to feasible trials, is the same set
    assert front == {t.number for t in result.study.best_trials if all(v <= 0 for v in t.constraints.values())}


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_resume_counts_existing_trials_and_measures_base_once(run, digits_cnn):
    result, url, *_ = run
    base_id = result.base.onnx_artifact_id
    again = search(digits_cnn, SPACE, n_trials=5, storage=url, study_name="it", verbose=False)
    states = again.trials()["state"]
    assert (states == "COMPLETE").sum() == 5
    assert again.base.onnx_artifact_id == base_id
    assert load(url, "it").trials().shape[0] == again.trials().shape[0]


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_resuming_with_another_space_is_refused_without_changing_the_study(run, digits_cnn):
    _, url, *_ = run
    n = len(load(url, "it").study.trials)
    other = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 16), finetune_epochs=(0, 1))
    with pytest.raises(ConfigError, match="different search space"):
        search(digits_cnn, other, n_trials=6, storage=url, study_name="it", verbose=False)
    assert len(load(url, "it").study.trials) == n


@pytest.mark.slow  # shares `run`: a real 4-trial search of digits-cnn (~40 s)
def test_plot_pareto_returns_a_figure(run):
    result, *_ = run
    fig = result.plot_pareto()
    names = [tr.name for tr in fig.data]
    assert "Pareto front" in names and "base (FP32)" in names


def test_pareto_helper_against_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.random((40, 2))
    mask = non_dominated(pts, ["maximize", "minimize"])
    for i, p in enumerate(pts):
        dominated = any((q[0] >= p[0] and q[1] <= p[1]) and (q[0] > p[0] or q[1] < p[1]) for q in pts)
        assert mask[i] == (not dominated)
