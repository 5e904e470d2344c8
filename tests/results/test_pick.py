"""recommend / knee / hypervolume / roles: exact answers on a synthetic study, and a real one."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pandas as pd
import pytest
from picking_study import picking_study

from lepton_search import ConfigError, SearchResult, load
from lepton_search.results.pick import BASE_TRIAL, candidates, hypervolume_min

BASE = {"accuracy": 0.99, "latency_ms": 12.0, "size_mb": 8.0, "workload": "synthetic"}
# name: (accuracy, latency_ms, size_mb, feasible)
POINTS = {
    "A": (0.99, 10.0, 4.0, True), "B": (0.98, 5.0, 2.0, True), "C": (0.95, 2.0, 1.0, True),
    "H": (0.96, 2.0, 1.0, True),  # same latency as C, more accurate: the tie goes to H
    "D": (0.90, 1.5, 0.5, True), "E": (0.97, 0.5, 0.4, False),  # E is infeasible
    "F": (0.94, 6.0, 3.0, True),  # dominated by B
}


def inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    """Independent hypervolume: sum over subsets of (-1)^(|S|+1) * volume of their common box."""
    pts = [p for p in points if (p < ref).all()]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


@pytest.fixture(scope="module")
def synthetic() -> tuple[SearchResult, dict[str, int]]:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    study.set_user_attr("base", BASE)
    study.set_user_attr("space", {"objectives": ["accuracy", "latency_ms"],
                                  "constraints": {"max_accuracy_drop_pts": 5.0}, "knobs": {}})
    numbers = {}
    dist = {"prune_ratio": optuna.distributions.FloatDistribution(0, 1),
            "bits": optuna.distributions.CategoricalDistribution([32, 16, 8, 4])}
    for i, (name, (acc, lat, size, feasible)) in enumerate(POINTS.items()):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, lat], params={"prune_ratio": i / 10, "bits": 8}, distributions=dist,
            user_attrs={"finetune_epochs": 1, "prune_method": "structured", "accuracy": acc, "latency_ms": lat,
                        "size_mb": size, "accuracy_drop_pts": (BASE["accuracy"] - acc) * 100,
                        "speedup": BASE["latency_ms"] / lat},
            constraints={"accuracy_drop_pts": -1.0 if feasible else 1.0}))
        numbers[name] = i
    return SearchResult(study, artifact_store=None), numbers


def test_recommend_fastest_within_limits(synthetic):
    result, n = synthetic
    assert result.recommend().trial == n["D"]  # no limit: the fastest feasible (E is infeasible)
    assert result.recommend(max_accuracy_drop_pts=0.5).trial == n["A"]
    assert result.recommend(max_accuracy_drop_pts=1.0).trial == n["B"]  # drop 1.0000000000000009 counts as 1
    assert result.recommend(max_accuracy_drop_pts=5.0).trial == n["H"]  # C and H tie on latency; H is more accurate
    assert result.recommend(max_latency_ms=5.0, max_size_mb=2.0).trial == n["D"]
    assert result.recommend(max_accuracy_drop_pts=2.0, max_latency_ms=6.0).trial == n["B"]


def test_recommend_names_closest_miss(synthetic):
    result, n = synthetic
    with pytest.raises(ConfigError, match=rf"max_latency_ms: got 4\.0.*closest miss is trial {n['B']}"):
        result.recommend(max_accuracy_drop_pts=1.0, max_latency_ms=4.0)
    with pytest.raises(ConfigError, match="max_latency_ms: got -1"):
        result.recommend(max_latency_ms=-1)
    with pytest.raises(ConfigError, match="max_size_mb"):
        result.recommend(max_size_mb=float("nan"))


def test_knee_and_roles(synthetic):
    result, n = synthetic
    front = set(result.pareto()["number"])
    assert front == {n["A"], n["B"], n["H"], n["D"]}
    # scaled to the front's range, H is nearest to (best accuracy, lowest latency): 0.339 vs B 0.427
    assert result.knee().trial == n["H"]
    assert result.roles() == {
        n["A"]: ["fastest within 0.5 pt of base"],
        n["B"]: ["fastest within 1 pt of base", "fastest within 2 pt of base"],
        n["H"]: ["knee"], n["D"]: ["smallest"],
    }


def test_hypervolume_matches_inclusion_exclusion(synthetic):
    result, _ = synthetic
    front = result.pareto()
    pts = np.column_stack([-front["accuracy"] * 100, front["latency_ms"]])
    for drop in (1.0, 5.0, 20.0):
        ref = np.array([-(BASE["accuracy"] * 100 - drop), BASE["latency_ms"]])
        assert result.hypervolume(max_accuracy_drop_pts=drop) == pytest.approx(inclusion_exclusion(pts, ref))
    # by hand with drop 1 pt: only A (drop 0) and B (drop 1, on the boundary: adds nothing) are inside
    assert result.hypervolume(max_accuracy_drop_pts=1.0) == pytest.approx(1.0 * (12.0 - 10.0))
    assert result.hypervolume() == result.hypervolume(max_accuracy_drop_pts=5.0)  # the study's constraint


@pytest.mark.parametrize("dims,n_points", [(2, 7), (3, 6), (3, 9)])
def test_hypervolume_min_random_sets(dims, n_points):
    rng = np.random.default_rng(dims * 100 + n_points)
    for _ in range(5):
        pts = rng.uniform(0, 1.2, size=(n_points, dims))  # some past the reference, some dominated
        ref = np.ones(dims)
        assert hypervolume_min(pts, ref) == pytest.approx(inclusion_exclusion(pts, ref), abs=1e-12)
    mc = rng.uniform(0, 1, size=(200_000, dims))
    pts = rng.uniform(0, 1, size=(n_points, dims))
    covered = (mc[:, None, :] >= pts[None, :, :]).all(axis=2).any(axis=1).mean()
    assert hypervolume_min(pts, np.ones(dims)) == pytest.approx(covered, abs=0.01)


@pytest.fixture(scope="module")
def real() -> SearchResult:
    storage, _ = picking_study()
    return load(storage, "pick")


def test_real_study_recommend_is_brute_force(real):
    df = candidates(real)
    assert len(df) >= 2 and (~real.trials().query("state == 'COMPLETE'")["feasible"]).any()
    base = {"number": BASE_TRIAL, "accuracy": real.base.accuracy, "accuracy_drop_pts": 0.0,
            "latency_ms": real.base.latency_ms}  # the base is a candidate of every pick
    with_base = pd.concat([df, pd.DataFrame([base])], ignore_index=True)
    for drop, lat in [(None, None), (1.0, None), (3.0, None), (None, float(df["latency_ms"].median()))]:
        ok = with_base
        if drop is not None:
            ok = ok[ok["accuracy_drop_pts"] <= drop + 1e-9]
        if lat is not None:
            ok = ok[ok["latency_ms"] <= lat]
        if ok.empty:
            with pytest.raises(ConfigError, match="closest miss"):
                real.recommend(max_accuracy_drop_pts=drop, max_latency_ms=lat)
            continue
        # ties on latency go to the base (no compression for nothing), then to the more accurate trial
        best = ok.assign(trial=ok["number"] != BASE_TRIAL).sort_values(
            ["latency_ms", "trial", "accuracy"], ascending=[True, True, False]).iloc[0]
        assert real.recommend(max_accuracy_drop_pts=drop, max_latency_ms=lat).trial == best["number"]


def test_real_study_front_figures(real):
    front = real.pareto()
    knee = real.knee()
    assert knee.trial in {*front["number"], BASE_TRIAL}
    roles = real.roles()
    # the knee's role goes to a trial, unless the base is the knee (the base has no trial row)
    assert set(roles) == set(front["number"]) and any("knee" in r for r in roles.values()) == (not knee.is_base)
    base = real.base
    pts = np.column_stack([-front["accuracy"] * 100, front["latency_ms"], front["size_mb"]])
    ref = np.array([-(base.accuracy * 100 - 3.0), base.latency_ms, base.size_mb])
    assert real.hypervolume() == pytest.approx(inclusion_exclusion(pts, ref))


def _slow_study(base_latency_ms: float) -> SearchResult:
    """A study whose only trials are slower than (or as fast as) a base of `base_latency_ms`."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("base", {**BASE, "latency_ms": base_latency_ms})
    study.set_user_attr("space", {"objectives": ["accuracy", "latency_ms"], "constraints": {}, "knobs": {}})
    dist = {"prune_ratio": optuna.distributions.FloatDistribution(0, 1)}
    for i, (acc, lat) in enumerate([(0.985, 12.5), (0.97, 15.0)]):
        study.add_trial(optuna.trial.create_trial(
            values=[acc, lat], params={"prune_ratio": i / 10}, distributions=dist,
            user_attrs={"finetune_epochs": 1, "bits": 32, "accuracy": acc, "latency_ms": lat, "size_mb": 8.0,
                        "accuracy_drop_pts": (BASE["accuracy"] - acc) * 100, "speedup": base_latency_ms / lat}))
    return SearchResult(study, artifact_store=None)


def test_the_base_is_the_pick_when_no_trial_beats_it():
    """A sub-ms GRU's pick was its own FP32 graph fine-tuned, timed 0.0667 ms against the base's 0.0426: the base
    is a candidate of every pick, so "keep the base" is the answer when no trial within the limits is faster."""
    slow = _slow_study(12.0)
    keep = slow.recommend(max_accuracy_drop_pts=1.0)
    assert keep.is_base and keep.speedup == 1.0 and keep.accuracy_drop_pts == 0.0 and keep.bits == 32
    assert keep.label().startswith("the base (keep the unmodified model")
    assert f"-> acc {BASE['accuracy']:.4f} (drop +0.00 pt)" in keep.label()  # the base's quality is shown like a trial's
    assert slow.recommend().is_base and slow.recommend(max_latency_ms=12.0).is_base
    with pytest.raises(ConfigError, match="max_latency_ms: got 11"):  # neither the base nor a trial fits
        slow.recommend(max_latency_ms=11.0)
    assert slow.knee().is_base  # the base dominates both trials
    assert all("knee" not in r for r in slow.roles().values())
    faster = _slow_study(20.0)  # the same trials beside a slower base: a trial is the pick again
    assert faster.recommend(max_accuracy_drop_pts=1.0).trial == 0 and not faster.knee().is_base
