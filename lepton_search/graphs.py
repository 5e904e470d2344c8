"""One graph, one latency: a study times each distinct graph once and every trial of that graph reads it.

Fine-tuning changes weights, not shapes: a chain's 0-, 1- and 2-epoch files are one graph, and so is the unpruned
FP32 model fine-tuned for an epoch and the base itself. Timed apart, one graph became two points of a front (the
same INT8 file timed 11.88 and 15.99 ms in two trials of one study, the base's own FP32 graph 0.0667 against
0.0426 ms): noise, not a finding. `graph_key` names a config's graph (every knob of a technique that shapes the
file; a technique that is not active on the config at its no-op; the train stage left out), and
`GraphLatencies` stores the first timing of each graph with the study, so every worker reads the same figure.
The base's graph is timed with the base.

A timing is the first one the study made of that graph (on a busy host, `remeasure` re-times the front later);
two workers that time one graph at the same moment both store theirs, the later write wins for later trials.

Example:
    >>> from lepton_search.space import CompressionConfig
    >>> graph_key(CompressionConfig(0.25, 8, 1)) == graph_key(CompressionConfig(0.25, 8, 2))
    True
    >>> is_base_graph(CompressionConfig(0.0, 32, 2))
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lepton_search import records
from lepton_search.knobs import KNOBS
from lepton_search.latency import LatencyEstimate
from lepton_search.space import CompressionConfig
from lepton_search.techniques import stages


def graph_config(config: CompressionConfig) -> dict[str, Any]:
    """The knobs that shape `config`'s file, every other knob at its no-op: train-stage knobs, and the knobs of
    techniques not active on it (ratio 0 prunes nothing whatever the method)."""
    out = _noops()
    for technique in stages.registered():
        if technique.stage != "train" and technique.active(config):
            out.update(technique.knob_values(config))
    return out


def model_config(config: CompressionConfig) -> dict[str, Any]:
    """What `config` makes: its graph's knobs (`graph_config`) and its training's. Two configs with one model
    config are one trial (prune_method at ratio 0, say): the second is a duplicate."""
    out = graph_config(config)
    for technique in stages.registered():
        if technique.stage == "train":
            out.update({k: getattr(config, k) for k in technique.knobs})
    return out


def _noops() -> dict[str, Any]:
    # read at call time: a knob registered after import (a plug-in's, a test's) counts too
    return {k.name: k.noop for k in KNOBS}


def is_base(config: CompressionConfig) -> bool:
    """Whether `config` makes the unmodified base (every knob at its no-op, or acting on nothing)."""
    return model_config(config) == _noops()


def is_base_graph(config: CompressionConfig) -> bool:
    """Whether `config`'s file is the base's graph (fine-tuned or not): its latency is the base's."""
    return graph_config(config) == _noops()


def graph_key(config: CompressionConfig) -> str:
    """A short stable name of `config`'s graph (a digest of `graph_config`)."""
    text = json.dumps(graph_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class GraphTiming:
    """One graph's latency in a study, and its file size (shapes fix the size; `size_mb` of the first file)."""

    latency: LatencyEstimate
    size_mb: float
    trial: int | None  # the trial that timed it; None: the base, or a budget probe before any trial

    def to_attrs(self) -> dict[str, Any]:
        lat = self.latency
        return {"p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "source": lat.source, "cv": lat.cv,
                "expected_error_pct": lat.expected_error_pct, "threads": lat.threads, "batch_size": lat.batch_size,
                "details": {k: v for k, v in lat.details.items() if isinstance(v, (str, int, float, bool, type(None)))},
                "size_mb": self.size_mb, "trial": self.trial}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> GraphTiming:
        lat = LatencyEstimate(p50_ms=attrs["p50_ms"], p90_ms=attrs["p90_ms"], source=attrs["source"], cv=attrs["cv"],
                              expected_error_pct=attrs["expected_error_pct"], threads=attrs["threads"],
                              batch_size=attrs["batch_size"], details=dict(attrs.get("details") or {}))
        return cls(lat, float(attrs["size_mb"]), attrs.get("trial"))


class GraphLatencies:
    """The study's graph timings: `get` before timing a file, `put` after timing one. The base's graph reads the
    base's latency."""

    def __init__(self, study: Any, base: Any, *, enabled: bool = True) -> None:
        self.study, self.base, self.enabled = study, base, enabled

    def get(self, config: CompressionConfig) -> GraphTiming | None:
        if not self.enabled:
            return None
        if is_base_graph(config):
            base = self.base
            return GraphTiming(LatencyEstimate(
                p50_ms=base.latency_ms, p90_ms=base.latency_p90_ms or base.latency_ms,
                source=base.latency_source or "measured", cv=base.latency_cv,
                expected_error_pct=base.latency_expected_error_pct, threads=base.threads,
                batch_size=base.batch_size or 1,
                details={k: v for k, v in (("load_avg_1min", base.load_avg_1min), ("busy", base.busy_host))
                         if v is not None}), base.size_mb, None)
        stored = records.graph_latency(self.study, graph_key(config))
        return None if stored is None else GraphTiming.from_attrs(stored)

    def put(self, config: CompressionConfig, latency: LatencyEstimate, size_mb: float, trial: int | None) -> None:
        if not self.enabled or is_base_graph(config):
            return
        key = graph_key(config)
        if records.graph_latency(self.study, key) is None:
            records.set_graph_latency(self.study, key, GraphTiming(latency, size_mb, trial).to_attrs())


def distinct_models(configs: Any) -> list[CompressionConfig]:
    """The first config of each model `configs` make, the base left out: what a study can evaluate."""
    seen, out = set(), []
    for config in configs:
        key = json.dumps(model_config(config), sort_keys=True, default=str)
        if key not in seen and not is_base(config):
            seen.add(key)
            out.append(config)
    return out
