"""Workload: a trained model, its data splits, an example input and a metric."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

from lepton_search.errors import ConfigError
from lepton_search.techniques.export import INPUT_NAME

DataLike = DataLoader | tuple[torch.Tensor, torch.Tensor] | Dataset
Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class InputSpec:
    """One model input as the exported graph sees it: its name, dtype and per-sample shape (no batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose arg-max equals the label (a fraction in [0, 1])."""
    return float((logits.argmax(axis=1) == labels).mean())


@dataclass
class Workload:
    """A user's model and data. Tensors, Datasets or DataLoaders are accepted for each split.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> wl = Workload("toy", model, train=(x, y), val=(x, y), example_input=x[:1])
        >>> wl.validate()
    """

    name: str
    model: nn.Module
    train: DataLike
    val: DataLike
    example_input: torch.Tensor
    test: DataLike | None = None
    metric: Metric | None = None
    batch_size: int = 256
    info: dict = field(default_factory=dict)
    input_spec: tuple[InputSpec, ...] | None = None  # None: one input, described by example_input

    # ---- inputs ---------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        """The model's inputs (name, dtype, per-sample shape), as exported to ONNX: `input_spec` when
        stated, else the one input `example_input` describes."""
        if self.input_spec is not None:
            return tuple(self.input_spec)
        x = self.example_input
        return (InputSpec(INPUT_NAME, str(x.dtype).removeprefix("torch."), tuple(x.shape[1:])),)

    def sample_inputs(self, n: int = 1, split: str = "val") -> dict[str, np.ndarray]:
        """The first `n` samples of `split` as ONNX Runtime feeds (input name -> array): latency is timed
        on real data, not on random numbers of the right shape."""
        xb, _ = next(iter(self.loader(split, batch_size=n)))
        spec = self.inputs[0]
        return {spec.name: xb.numpy().astype(spec.dtype, copy=False)}

    # ---- data access --------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        data = getattr(self, split)
        if data is None:
            raise ConfigError(f"workload.{split}", None, f"this workload has no {split} split")
        if isinstance(data, DataLoader):
            return data.dataset
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            if len(data[0]) != len(data[1]):
                raise ConfigError(f"workload.{split}", f"{len(data[0])} inputs and {len(data[1])} labels",
                                  "pass one label per input")
            return TensorDataset(data[0], data[1])
        if isinstance(data, Dataset):
            return data
        raise ConfigError(f"workload.{split}", type(data).__name__, "pass a DataLoader, a Dataset or (inputs, labels) tensors")

    def loader(
        self, split: str, *, batch_size: int | None = None, shuffle: bool = False,
        subset: int | None = None, seed: int = 0,
    ) -> DataLoader:
        """A DataLoader over `split`, optionally a seeded random `subset` of it."""
        ds = self.dataset(split)
        idx = None
        if subset is not None and subset < len(ds):
            idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:subset]
        gen = torch.Generator().manual_seed(seed)
        bs = batch_size or self.batch_size
        if isinstance(ds, TensorDataset):
            # Index whole batches at once: per-sample indexing + collate costs more than a small CNN step.
            if idx is not None:
                ds = TensorDataset(*(t[idx] for t in ds.tensors))
            base = RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds)
            return DataLoader(ds, sampler=BatchSampler(base, bs, drop_last=False), batch_size=None)
        if idx is not None:
            ds = Subset(ds, idx.tolist())
        return DataLoader(ds, batch_size=bs, shuffle=shuffle, generator=gen)

    def batches(self, split: str, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.loader(split, batch_size=batch_size)

    def score(self, logits: np.ndarray, labels: np.ndarray) -> float:
        return (self.metric or top1_accuracy)(logits, labels)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Cheap checks before any heavy compute: types, non-empty splits, example input runs."""
        if not isinstance(self.model, nn.Module):
            raise ConfigError("workload.model", type(self.model).__name__, "pass a torch.nn.Module")
        if not isinstance(self.example_input, torch.Tensor):
            raise ConfigError("workload.example_input", type(self.example_input).__name__, "pass a torch.Tensor batch")
        for split in ("train", "val") + (("test",) if self.test is not None else ()):
            n = len(self.dataset(split))
            if n == 0:
                raise ConfigError(f"workload.{split}", "0 samples", "pass a non-empty split")
        self._check_input_spec()
        xb, _ = self.dataset("val")[0]
        if tuple(xb.shape) != tuple(self.example_input.shape[1:]):
            raise ConfigError(
                "workload.example_input", tuple(self.example_input.shape),
                f"must be a batch of the data's sample shape {tuple(xb.shape)}, e.g. x[:1]",
            )
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(self.example_input)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's model
            raise ConfigError("workload.model", type(exc).__name__, f"the model must run on example_input ({exc})") from None
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ConfigError("workload.model", getattr(out, "shape", type(out).__name__), "must return (batch, classes) logits")
        for split in ("train", "val") + (("test",) if self.test is not None else ()):
            self._check_split(split, n_classes=int(out.shape[1]))

    def _check_input_spec(self) -> None:
        if self.input_spec is None:
            return
        spec = tuple(self.input_spec)
        if len(spec) != 1 or not isinstance(spec[0], InputSpec):
            raise ConfigError("workload.input_spec", spec, "state one InputSpec(name, dtype, shape); several named "
                              "inputs (token ids + mask) are not supported by the pipeline yet")
        x, (s,) = self.example_input, spec
        got = InputSpec(s.name, str(x.dtype).removeprefix("torch."), tuple(x.shape[1:]))
        if (s.dtype, tuple(s.shape)) != (got.dtype, got.shape):
            raise ConfigError("workload.input_spec", s, f"example_input is {got.dtype} {got.shape} per sample; "
                              "make the two agree")
        if s.name != INPUT_NAME:
            raise ConfigError("workload.input_spec", s.name, f"the exported graph names its input {INPUT_NAME!r}; "
                              "use that name")

    def _check_split(self, split: str, *, n_classes: int, max_samples: int = 4096) -> None:
        """Labels are class indices the model can output; inputs are finite. Tensor splits are checked
        whole; other datasets on their first `max_samples` samples."""
        ds = self.dataset(split)
        if isinstance(ds, TensorDataset):
            x, y = ds.tensors[0], ds.tensors[1]
        else:
            items = [ds[i] for i in range(min(len(ds), max_samples))]
            x = torch.stack([torch.as_tensor(a) for a, _ in items])
            y = torch.as_tensor([b.item() if torch.is_tensor(b) and b.ndim == 0 else b for _, b in items])
        if torch.is_floating_point(y) or y.dtype == torch.bool:
            raise ConfigError(f"workload.{split} labels", str(y.dtype).removeprefix("torch."),
                              "pass class indices as integers, e.g. labels.long()")
        if y.ndim != 1:
            raise ConfigError(f"workload.{split} labels", tuple(y.shape), "pass one class index per sample (1-D)")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= n_classes:
            raise ConfigError(f"workload.{split} labels", f"{low}..{high}",
                              f"the model outputs {n_classes} classes, so labels must lie in 0..{n_classes - 1}; "
                              "fix the labels or the model's last layer")
        if torch.is_floating_point(x):
            bad = (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).nonzero()
            if len(bad):
                raise ConfigError(f"workload.{split} inputs", f"{len(bad)} samples with NaN or inf (first: #{int(bad[0])})",
                                  "drop or repair those samples before the search")
