"""The latency extension point: one class with `latency()` (and optionally `describe()`)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LatencyEstimate:
    """Latency of one ONNX file on one target. `source` is measured, predicted or calibrated."""

    p50_ms: float
    p90_ms: float
    source: str
    cv: float | None = None
    expected_error_pct: float | None = None
    threads: int | None = None
    batch_size: int = 1
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def usd_per_million_inferences(self) -> float | None:
        """Cost of a million sequential inferences on a rented target (`details["usd_per_hour"]`), else None."""
        price = self.details.get("usd_per_hour")
        return None if price is None else usd_per_million_inferences(float(price), self.p50_ms)


def usd_per_million_inferences(usd_per_hour: float, latency_ms: float) -> float:
    """usd_per_hour / (3600 s / latency_s) * 1e6: the price of the machine time a million runs take."""
    return usd_per_hour / (3600.0 / (latency_ms / 1e3)) * 1e6


class LatencyModel(abc.ABC):
    """Subclass, set `name` and `source`, implement `latency`; register with `register_target`."""

    name: str = "base"
    source: str = "measured"

    @abc.abstractmethod
    def latency(self, onnx_path: str | Path, input_shape: tuple[int, ...]) -> LatencyEstimate:
        """Latency of the model at `onnx_path` for inputs of `input_shape` (batch dimension included)."""

    def describe(self) -> dict[str, Any]:
        """What a report should say about this target (device, settings, error model)."""
        return {"name": self.name, "source": self.source}
