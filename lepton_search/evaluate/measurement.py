"""Measurement: what one Candidate scored on a target (accuracy, latency, size)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_search.candidate import Candidate, InputTransform
from lepton_search.evaluate.accuracy import onnx_accuracy
from lepton_search.latency import LatencyEstimate, LatencyModel
from lepton_search.latency.decode import generation_fields
from lepton_search.workloads import Workload


@dataclass(frozen=True)
class Measurement:
    accuracy: float
    val_correct: int | None
    val_total: int
    latency_ms: float  # p50
    latency_p90_ms: float
    latency_cv: float | None
    latency_source: str
    latency_expected_error_pct: float | None
    threads: int | None
    batch_size: int
    size_mb: float
    load_avg_1min: float | None = None
    busy_host: str | None = None  # why the timing was taken on a busy host (`latency.host_cpu.busy_reason`)
    test_accuracy: float | None = None
    usd_per_million_inferences: float | None = None  # None unless the target has a price per hour
    generation: dict | None = None  # a generation file: prefill_ms, ttft_ms, decode_tokens_per_s (records.py)

    def objective(self, name: str) -> float:
        value = getattr(self, name)
        if value is None:
            from lepton_search.errors import ConfigError

            raise ConfigError("objectives", name, "this target gives no value for it (a price needs usd_per_hour)")
        return float(value)


def evaluate(candidate: Candidate, workload: Workload, target: LatencyModel, *, with_test: bool = False,
             latency: LatencyEstimate | None = None) -> Measurement:
    """Run the exported file for accuracy, then time it on `target` (`latency`: already timed, not again), both
    on the inputs the candidate takes (its transform of the workload's batches, its own samples)."""
    return measure_onnx(candidate.onnx_path, workload, target, with_test=with_test, latency=latency,
                        transform=candidate.input_transform, samples=candidate.sample_inputs)


def measure_onnx(onnx_path: Path, workload: Workload, target: LatencyModel, *, with_test: bool = False,
                 latency: LatencyEstimate | None = None, transform: InputTransform | None = None,
                 samples: Mapping[str, np.ndarray] | None = None) -> Measurement:
    """Accuracy of `onnx_path` on the validation (and test) split in ONNX Runtime, its latency on `target`
    (fed `samples`, default the workload's; `transform` turns each data batch into the file's inputs)."""
    acc = onnx_accuracy(onnx_path, workload, "val", transform=transform)
    test = (onnx_accuracy(onnx_path, workload, "test", transform=transform).accuracy
            if with_test and workload.test is not None else None)
    lat = latency or target.latency(onnx_path, dict(samples) if samples is not None else workload.sample_inputs())
    return Measurement(
        accuracy=acc.accuracy, val_correct=acc.correct, val_total=acc.total,
        latency_ms=lat.p50_ms, latency_p90_ms=lat.p90_ms, latency_cv=lat.cv, latency_source=lat.source,
        latency_expected_error_pct=lat.expected_error_pct, threads=lat.threads, batch_size=lat.batch_size,
        size_mb=Path(onnx_path).stat().st_size / 1e6, load_avg_1min=lat.details.get("load_avg_1min"),
        busy_host=lat.details.get("busy"), test_accuracy=test, usd_per_million_inferences=lat.usd_per_million_inferences,
        generation=generation_fields(lat),
    )
