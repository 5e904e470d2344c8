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
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from lepton_search import records
from lepton_search.errors import ConfigError
from lepton_search.graphs import GraphLatencies, graph_config, graph_key
from lepton_search.knobs import KNOBS
from lepton_search.latency import LatencyEstimate, LatencyModel
from lepton_search.records import BaseRecord, TrialRecord
from lepton_search.space import BUDGETS, CompressionConfig, SearchSpace
from lepton_search.workloads import Workload

MAX_BUDGET_PROBES = 64  # graphs `check_reachable` times at most before the search goes on


def _most_compressed_first(config: CompressionConfig) -> int:
    """Sort key: more knobs off their no-op first. Only the order of the budget probes (the most compressed graph
    tends to meet a budget at the first probe): every graph is timed before a space is refused."""
    shaped = graph_config(config)
    return -sum(shaped[k.name] != k.noop for k in KNOBS)


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
        lat, size_mb, probe = self._graph(config, lambda: compress(trial, untrained), trial.number)
        missed = self._missed(lat, size_mb)
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

    def check_reachable(self, make: Callable[[CompressionConfig, int], Any], limit: int = MAX_BUDGET_PROBES) -> int:
        """Latency first, for a space with budgets: before any training, the space's graphs are timed untrained,
        the most compressed first (`_most_compressed_first`, an order only), until one meets every budget; each
        timing is the study's for that graph (`graphs`), so trials read it again. When none does, every config
        would be rejected before training (or measured infeasible, untrained): refused in one line naming the
        budget. `make(config, i)` builds the untrained candidate of probe `i`. Returns the number of graphs timed
        or read (0 without budgets); past `limit` graphs it stops with a warning and the search goes on."""
        if not self.budgets:
            return 0
        graphs: dict[str, CompressionConfig] = {}
        for config in self.space.configs():
            untrained = dataclasses.replace(config, finetune_epochs=0)
            graphs.setdefault(graph_key(untrained), untrained)
        order = sorted(graphs.values(), key=_most_compressed_first)
        closest: tuple[float, CompressionConfig, dict[str, float]] | None = None
        for i, config in enumerate(order[:limit]):
            lat, size_mb, probe = self._graph(config, lambda c=config, n=i: make(c, n), None)
            if probe is not None:
                probe.onnx_path.unlink(missing_ok=True)
            missed = self._missed(lat, size_mb)
            if not missed:
                return i + 1
            # how far off, each budget as a share of its own limit (a latency in ms and a size in MB compare)
            off = sum(v / max(abs(getattr(self.space, k)), 1e-12) for k, v in missed.items())
            if closest is None or off < closest[0]:
                closest = (off, config, missed)
        if len(order) > limit:
            warnings.warn(f"budgets: none of the {limit} most compressed graphs of {len(order)} meets them untrained; "
                          "the search goes on with the rest untimed", stacklevel=2)
            return limit
        assert closest is not None
        _, config, missed = closest
        name, by = next(iter(missed.items()))
        raise ConfigError(f"constraints.{name}", getattr(self.space, name),
                          f"no graph of this space meets it: all {len(order)} timed untrained before any training "
                          f"(the closest, {config.label()}, misses it by {by:.4g}), so every config would be "
                          "rejected; loosen it or widen the space (under a new study name: a study keeps its space)")

    def _graph(self, config: CompressionConfig, make: Callable[[], Any], trial: int | None
               ) -> tuple[LatencyEstimate, float, Any]:
        """(latency, size_mb, the probe made or None) of `config`'s graph: the study's timing when it has one, else
        the untrained candidate `make()` builds, timed and stored as the graph's."""
        known = self.graphs.get(config)
        if known is not None:
            return known.latency, known.size_mb, None
        probe = make()
        lat = self.target.latency(probe.onnx_path, dict(probe.sample_inputs or self.workload.sample_inputs()))
        self.graphs.put(config, lat, probe.size_mb, trial)
        return lat, probe.size_mb, probe

    def _missed(self, lat: LatencyEstimate, size_mb: float) -> dict[str, float]:
        figures = {"latency_ms": lat.p50_ms, "speedup": self.base.latency_ms / lat.p50_ms, "size_mb": size_mb}
        return {k: v for k, v in self.space.violations(figures, BUDGETS).items() if v > 0}

    def found_points(self) -> list[tuple[float, float]]:
        """(latency_ms, accuracy) of every COMPLETE, feasible trial so far (all workers')."""
        points = []
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if records.has_measurements(t) and all(v <= 0 for v in t.constraints.values()):
                rec = TrialRecord.of(t)
                points.append((rec.latency_ms, rec.accuracy))
        return points
