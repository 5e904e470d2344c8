"""The latency extension point: one class with `latency()` (and optionally `describe()`)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Inputs = Mapping[str, np.ndarray]  # graph input name -> array, batch dimension first


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
    def latency(self, onnx_path: str | Path, inputs: Inputs | None = None) -> LatencyEstimate:
        """Latency of the model at `onnx_path` fed `inputs` (input name -> array, batch first).

        None means synthetic inputs of the graph's declared shapes and types at batch 1 (`graph_inputs`).
        """

    def describe(self) -> dict[str, Any]:
        """What a report should say about this target (device, settings, error model)."""
        return {"name": self.name, "source": self.source}


def graph_inputs(onnx_path: str | Path, batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic inputs for every graph input: symbolic dimensions set to `batch_size`, floats drawn
    from N(0, 1), integers zero (a token id every vocabulary has). Needs onnxruntime, not torch."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    out = {}
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for inp in sess.get_inputs():
        shape = tuple(d if isinstance(d, int) else batch_size for d in inp.shape)
        kind = inp.type.removeprefix("tensor(").removesuffix(")")
        dtype = {"float": np.float32, "double": np.float64, "float16": np.float16}.get(kind)
        out[inp.name] = (rng.standard_normal(shape).astype(dtype) if dtype is not None
                         else np.zeros(shape, dtype={"int32": np.int32, "bool": np.bool_}.get(kind, np.int64)))
    return out


SAMPLE_INPUTS_FILE = "sample_inputs.npz"  # real validation samples saved beside each model (input name -> array)


def save_inputs(path: str | Path, inputs: Inputs) -> Path:
    """Write `inputs` (input name -> array, batch first, each in its own dtype) to an .npz file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to another suffix
        np.savez(fh, **{name: np.asarray(x) for name, x in inputs.items()})
    return path


def load_inputs(path: str | Path) -> dict[str, np.ndarray]:
    """The inputs `save_inputs` wrote (no pickled objects are read).

    Example:
        >>> import tempfile
        >>> feeds = {"input_ids": np.arange(6).reshape(1, 6), "attention_mask": np.ones((1, 6), dtype=np.int64)}
        >>> back = load_inputs(save_inputs(Path(tempfile.mkdtemp()) / SAMPLE_INPUTS_FILE, feeds))
        >>> sorted(back), back["input_ids"].dtype
        (['attention_mask', 'input_ids'], dtype('int64'))
    """
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def batch_of(inputs: Inputs) -> int:
    """The batch size of a set of inputs (the first dimension of the first one; 1 for scalars)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if np.ndim(first) else 1


def with_batch(inputs: Inputs, batch_size: int) -> dict[str, np.ndarray]:
    """`inputs` with their batch dimension cycled or cut to `batch_size` (same samples, repeated)."""
    out = {}
    for name, x in inputs.items():
        idx = np.arange(batch_size) % max(len(x), 1)
        out[name] = np.ascontiguousarray(np.asarray(x)[idx])
    return out
