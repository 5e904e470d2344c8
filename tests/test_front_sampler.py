"""The `front` sampler: expected hypervolume improvement per second, fine-tune epochs as fidelity."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from lepton_search import ConfigError, records, search
from lepton_search.front_sampler import TRIAL_SECONDS, FrontSampler, improvement
from lepton_search.space import SearchSpace

DIST = {"prune_ratio": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.25),
        "finetune_epochs": optuna.distributions.IntDistribution(0, 2)}


def test_improvement_is_the_area_a_point_adds_to_the_front():
    ref = (0.8, 2.0)
    assert improvement(np.array([[0.9]]), np.array([[1.0]]), [], ref)[0, 0] == pytest.approx(0.1)
    front = [(0.9, 1.0)]
    assert improvement(np.array([[0.85]]), np.array([[1.5]]), front, ref)[0, 0] == 0.0  # dominated
    # faster and less accurate: only the strip left of the front point, up to its own accuracy
    assert improvement(np.array([[0.85]]), np.array([[0.5]]), front, ref)[0, 0] == pytest.approx(0.5 * 0.05)
    assert improvement(np.array([[0.7]]), np.array([[0.5]]), front, ref)[0, 0] == 0.0  # below the reference


def _study(rejected_chain: float | None = None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("base", {"accuracy": 0.95, "latency_ms": 1.0, "size_mb": 1.0})
    records.set_study_space(study, {**SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32,),
                                                  finetune_epochs=(0, 2)).to_dict()})
    def add(ratio, epochs, acc, lat, reject=False):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, lat], params={"prune_ratio": ratio, "finetune_epochs": epochs}, distributions=DIST,
            user_attrs={TRIAL_SECONDS: 2.0 + 10 * epochs, "finetune_seconds": 10.0 * epochs,
                        "finetune_epochs_reused": 0, **({records.REJECTED: "dominated"} if reject else {})}))
    add(0.0, 1, 0.95, 1.0)
    add(0.25, 1, 0.94, 0.6)
    if rejected_chain is not None:
        add(rejected_chain, 1, 0.3, 0.4, reject=True)
    return study


def test_a_chain_runs_its_epochs_in_order_and_a_rejected_chain_stops():
    proposals = {tuple(sorted(FrontSampler(seed=s).next_config(_study(), DIST).items())) for s in range(12)}
    allowed = {(("finetune_epochs", 2), ("prune_ratio", 0.0)), (("finetune_epochs", 2), ("prune_ratio", 0.25)),
               (("finetune_epochs", 1), ("prune_ratio", 0.5))}
    assert proposals <= allowed, proposals  # never 0.5 at 2 epochs before 1; never pruned and untrained; never the base
    rejected = {tuple(sorted(FrontSampler(seed=s).next_config(_study(rejected_chain=0.5), DIST).items()))
                for s in range(12)}
    assert all(dict(p)["prune_ratio"] != 0.5 for p in rejected), rejected


def test_a_graph_the_study_timed_before_any_trial_is_known_not_predicted():
    from lepton_search.graphs import graph_key
    from lepton_search.space import CompressionConfig

    study, sampler = _study(), FrontSampler(seed=0)
    sampler.next_config(study, DIST)  # reads the study: no timing of the 0.5 chain yet, so it is predicted
    rows = [{"prune_ratio": 0.5, "finetune_epochs": 1}]
    points, _ = sampler._observe(study, DIST)
    _, sd, known = sampler._predict_latency(points, rows, DIST)
    assert not known[0] and sd[0] > 0
    # a budget probe timed the 0.5 graph (`EarlyRejection.check_reachable`): the sampler reads it from the study
    records.set_graph_latency(study, graph_key(CompressionConfig(0.5, 32, 0)), {"p50_ms": 0.123})
    sampler.next_config(study, DIST)
    mu, sd, known = sampler._predict_latency(points, rows, DIST)
    assert known[0] and mu[0] == 0.123 and sd[0] == 0


def test_it_refuses_objectives_it_cannot_search():
    with pytest.raises(ConfigError, match=r"^sampler: got 'front'; searches objectives \[accuracy, latency_ms\]"):
        SearchSpace(sampler="front", objectives=("accuracy", "latency_ms", "size_mb"))


def test_a_search_runs_with_it(digits_mlp, sqlite_url):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1), sampler="front", trials=4)
    result = search(digits_mlp, space, n_trials=4, storage=sqlite_url, study_name="f", verbose=False, callbacks=[],
                    remeasure=False)
    done = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 4 and len({tuple(sorted(t.params.items())) for t in done}) == 4
