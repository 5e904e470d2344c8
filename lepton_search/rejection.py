"""Rejecting a config before any fine-tuning step: a budget it cannot meet, or the `early_reject` rule.

A config with fine-tuning epochs is first compressed untrained and timed: its graph is the trained one's (epochs
change weights, not shapes), so its latency, speed-up and size are already the trained model's. It is rejected
when that misses a budget (`max_latency_ms`, `min_speedup`, `max_size_mb`) or, under `early_reject: dominated`,
when it is no faster than a found point as accurate as the base (less one standard error): it could join the
front only by beating that point's accuracy. A rejected trial is stored with its untrained figures, its reason
(`rejected_before_training`) and constraints that make it infeasible for the sampler.

Example:
    >>> dominated_before_training(2.0, [(1.5, 0.95)], base_accuracy=0.94) is not None
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from lepton_search import records
from lepton_search.graphs import GraphLatencies
from lepton_search.latency import LatencyModel
from lepton_search.records import BaseRecord, TrialRecord
from lepton_search.space import BUDGETS, CompressionConfig, SearchSpace
from lepton_search.workloads import Workload


def dominated_before_training(latency_ms: float, found: Sequence[tuple[float, float]],
                              base_accuracy: float, tolerance: float = 0.0) -> str | None:
    """Why a config may be rejected before fine-tuning, or None to train it.

    Rejected when its untrained latency (the trained graph's: epochs change weights, not shapes) is no
    faster than (>=) that of a found point, `found` being (latency_ms, accuracy) of completed, feasible
    trials, whose accuracy is >= `base_accuracy - tolerance`. Such a config joins the accuracy/latency front
    only by beating that point's accuracy, so the unpruned base's less `tolerance`: the bet is that compression
    rarely does. The study passes one standard error of the base's validation accuracy as `tolerance` (a point
    that close is as good as the base as far as the validation split can tell): on the 130-config grid of
    experiments/search_efficiency.py a tolerance of 0 never fired. The point named is the fastest such one.
    Pure, so a benchmark can replay it on a table of trials.

    Example:
        >>> dominated_before_training(2.0, [(1.5, 0.95), (1.0, 0.90)], base_accuracy=0.94)
        "no faster than a found point (2 ms >= 1.5 ms) whose accuracy 0.95 is >= the base's 0.94"
        >>> dominated_before_training(1.2, [(1.5, 0.95), (1.0, 0.90)], base_accuracy=0.94) is None
        True
        >>> dominated_before_training(2.0, [(1.5, 0.937)], base_accuracy=0.94, tolerance=0.0035)
        "no faster than a found point (2 ms >= 1.5 ms) whose accuracy 0.937 is >= the base's 0.94 - 0.0035"
    """
    threshold = base_accuracy - tolerance
    beaten_by = [(lat, acc) for lat, acc in found if acc >= threshold and latency_ms >= lat]
    if not beaten_by:
        return None
    lat, acc = min(beaten_by)
    less = f" - {tolerance:.2g}" if tolerance > 0 else ""
    return (f"no faster than a found point ({latency_ms:.4g} ms >= {lat:.4g} ms) whose accuracy {acc:.4g} "
            f"is >= the base's {base_accuracy:.4g}{less}")


class EarlyRejection:
    """The budgets and the rule of one study, checked on each config before it trains."""

    def __init__(self, study: optuna.Study, space: SearchSpace, target: LatencyModel, base: BaseRecord,
                 workload: Workload, graphs: GraphLatencies | None = None) -> None:
        self.study, self.space, self.target, self.base, self.workload = study, space, target, base, workload
        self.graphs = graphs or GraphLatencies(study, base, enabled=False)
        # The rule reasons on accuracy and latency alone: a third objective (size, price) could put a slower
        # config on the front, so there it stays off.
        self.rule_on = (space.early_reject == "dominated" and "latency_ms" in space.objectives
                        and set(space.objectives) <= {"accuracy", "latency_ms"})
        # The rule's tolerance: one standard error of the base's validation score (classification: binomial, 5,000
        # images at 92%: 0.38 pt; a task without a closed form: 0, so the rule rejects less, never more)
        self.tolerance = workload.task.score_tolerance(base.accuracy, len(workload.dataset("val")))
        self.budgets = bool(space.set_constraints(BUDGETS))

    def check(self, trial: optuna.Trial, config: CompressionConfig,
              compress: Callable[[optuna.Trial, CompressionConfig], Any]) -> tuple[Any, Any, bool] | None:
        """(untrained candidate, its latency, dominated?) when a budget or the rule rejects `config` (its reason
        stored on the trial), else None. `compress(trial, config)` makes a candidate; the untrained probe is made
        only when the study has not timed this graph yet or the config is rejected (its untrained figures are
        stored), and deleted again when the config goes on to train (its timing stays, `graphs`)."""
        if config.finetune_epochs == 0:
            return None
        found = self.found_points() if self.rule_on else []
        if not self.budgets and not found:
            return None
        untrained = dataclasses.replace(config, finetune_epochs=0)
        known, probe = self.graphs.get(config), None
        if known is None:
            probe = compress(trial, untrained)
            lat = self.target.latency(probe.onnx_path, dict(probe.sample_inputs or self.workload.sample_inputs()))
            size_mb = probe.size_mb
            self.graphs.put(config, lat, size_mb, trial.number)
        else:
            lat, size_mb = known.latency, known.size_mb
        figures = {"latency_ms": lat.p50_ms, "speedup": self.base.latency_ms / lat.p50_ms, "size_mb": size_mb}
        missed = {k: v for k, v in self.space.violations(figures, BUDGETS).items() if v > 0}
        dominated = None if missed else dominated_before_training(lat.p50_ms, found, self.base.accuracy,
                                                                  self.tolerance)
        if missed:
            reason = "over budget before fine-tuning: " + ", ".join(f"{k} missed by {v:.4g}" for k, v in missed.items())
        elif dominated:
            reason = f"dominated before fine-tuning: {dominated}"
        else:
            if probe is not None:
                probe.onnx_path.unlink(missing_ok=True)
            return None
        records.set_rejected(trial, reason)
        probe = probe or compress(trial, untrained)  # its untrained accuracy is what the trial stores
        return dataclasses.replace(probe, config=config), lat, bool(dominated)  # measured as is; infeasible

    def found_points(self) -> list[tuple[float, float]]:
        """(latency_ms, accuracy) of every COMPLETE, feasible trial so far (all workers')."""
        points = []
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if records.has_measurements(t) and all(v <= 0 for v in t.constraints.values()):
                rec = TrialRecord.of(t)
                points.append((rec.latency_ms, rec.accuracy))
        return points
