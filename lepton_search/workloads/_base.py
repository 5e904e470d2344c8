"""Workload: a trained model, its data splits, its inputs (an example batch, names, dtypes) and a metric.

A model may take several inputs of their own dtypes (a token classifier: int64 `input_ids` and
`attention_mask`). Their data is a dataset whose items are `(x1, ..., xN, y)`, labels last, in the order
`forward` takes the inputs: a `TensorDataset(ids, mask, labels)`, tensors `(ids, mask, labels)` or
`((ids, mask), labels)`, or any Dataset / DataLoader giving such tuples. `example_input` is then a tuple
with one batch per input, and `input_spec` names them as the exported ONNX graph will.
"""

from __future__ import annotations

import re
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
from lepton_search.tasks import Task, get_task
from lepton_search.techniques import families
from lepton_search.techniques.embeddings import check_embedding_ids
from lepton_search.techniques.export import OUTPUT_NAME, input_names
from lepton_search.training import split_batch
from lepton_search.workloads.hf import HFLogits, is_hf_model

DataLike = DataLoader | tuple[torch.Tensor, ...] | Dataset
ExampleInput = torch.Tensor | tuple[torch.Tensor, ...]
Metric = Callable[[np.ndarray, np.ndarray], float]
SAMPLE_INPUTS = 8  # validation samples latency is timed on (and saved as sample_inputs.npz with the artifacts)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DTYPES = ("float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")


@dataclass(frozen=True)
class InputSpec:
    """One model input as the exported graph sees it: its name, dtype and per-sample shape (no batch).

    Example:
        >>> InputSpec("input_ids", "int64", (128,))
        InputSpec(name='input_ids', dtype='int64', shape=(128,))
    """

    name: str
    dtype: str
    shape: tuple[int, ...]


LSTM_FAMILY = "RNN (LSTM)"  # model_family's name for a model with an LSTM (its INT8 route is dynamic)
TRANSFORMER_FAMILY = "Transformer"  # ... and for one with self-attention (`families.has_attention`; dynamic too)


def model_family(model: nn.Module) -> str:
    """What kind of network `model` is, as cards and reports name it: 'Transformer', 'RNN (LSTM)',
    'RNN (GRU)', 'RNN', 'CNN' or 'MLP' (the first that applies, in that order).

    Example:
        >>> model_family(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3)))
        'CNN'
        >>> model_family(nn.LSTM(4, 8))
        'RNN (LSTM)'
    """
    modules = list(model.modules())
    if families.has_attention(model):
        return TRANSFORMER_FAMILY
    for cls, name in ((nn.LSTM, LSTM_FAMILY), (nn.GRU, "RNN (GRU)"), (nn.RNN, "RNN")):
        if any(isinstance(m, cls) for m in modules):
            return name
    return "CNN" if any(isinstance(m, nn.modules.conv._ConvNd) for m in modules) else "MLP"


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

    Several inputs (token ids and a mask, int64): one tensor per input, labels last, and their names:
        >>> class Tok(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb, self.out = nn.Embedding(20, 8), nn.Linear(8, 3)
        ...     def forward(self, ids, mask):
        ...         return self.out((self.emb(ids) * mask.unsqueeze(-1)).sum(1))
        >>> ids, mask = torch.randint(0, 20, (64, 6)), torch.ones(64, 6, dtype=torch.long)
        >>> wl = Workload("tok", Tok(), train=(ids, mask, y), val=(ids, mask, y), example_input=(ids[:1], mask[:1]),
        ...               input_spec=(InputSpec("input_ids", "int64", (6,)), InputSpec("attention_mask", "int64", (6,))),
        ...               sequence_length=6)
        >>> wl.validate()
        >>> sorted(wl.sample_inputs(2))
        ['attention_mask', 'input_ids']
    """

    name: str
    model: nn.Module
    train: DataLike
    val: DataLike
    example_input: ExampleInput  # a batch (e.g. x[:1]); a tuple of batches, one per input, for several inputs
    test: DataLike | None = None
    metric: Metric | None = None
    batch_size: int = 256
    info: dict = field(default_factory=dict)
    input_spec: tuple[InputSpec, ...] | None = None  # None: described by example_input, named input / input_0..
    sequence_length: int | None = None  # tokens per sample of a sequence model (None: see `seq_len`)
    # what the outputs mean: "classification" (default), "regression", or a `tasks.Task`; `metric`, when given,
    # replaces the task's score (it must be higher-is-better, as the task's stored score is)
    task: str | Task | None = None
    # validation rows latency is timed on (and stored as sample_inputs.npz): one serving request, e.g. a
    # recommender's one user x 100 candidate items
    sample_count: int = SAMPLE_INPUTS
    # a causal language model exported for generation (past key/values, `techniques.generation`): its latency is
    # ms per decoded token at batch 1 after a prefill (`latency.decode`), its score a prefill with an empty past
    generation: bool = False
    # the graph of a generation file (`generation.GRAPHS`): "torch" (our exporter, unfused) or "builder" (ONNX Runtime
    # GenAI's model builder, fused: GroupQueryAttention, one q/k/v MatMul; ~2x the tokens/s; needs onnxruntime-genai)
    generation_graph: str = "torch"

    def __post_init__(self) -> None:
        self.task = get_task(self.task)  # an unknown name fails here, before any data is read
        if self.generation or self.generation_graph != "torch":
            from lepton_search.techniques.generation import check_graph

            check_graph(self.generation_graph, generation=self.generation)
        if is_hf_model(self.model):  # a Hugging Face model as it comes: inputs by name, ModelOutput -> logits
            self.model = HFLogits.wrap(self.model, n_inputs=len(self.example_inputs))

    # ---- inputs ---------------------------------------------------------------------------
    @property
    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """`example_input` as a tuple, one batch per model input."""
        x = self.example_input
        return tuple(x) if isinstance(x, (tuple, list)) else (x,)

    @property
    def example_args(self) -> ExampleInput:
        """`example_input` as pruning and export take it: the tensor for one input, a tuple for several."""
        xs = self.example_inputs
        return xs[0] if len(xs) == 1 else xs

    @property
    def inputs(self) -> tuple[InputSpec, ...]:
        """The model's inputs (name, dtype, per-sample shape), as exported to ONNX: `input_spec` when
        stated, else what `example_input` describes (named `input`, or `input_0`... for several)."""
        if self.input_spec is not None:
            return tuple(self.input_spec)
        xs = self.example_inputs
        names = self.model.input_names if isinstance(self.model, HFLogits) else input_names(xs if len(xs) > 1 else xs[0])
        return tuple(InputSpec(n, _dtype_name(x), tuple(x.shape[1:])) for n, x in zip(names, xs))

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def seq_len(self) -> int | None:
        """The sequence length: `sequence_length` when stated, else the per-sample length shared by all
        integer (token id) inputs of shape (length,); None for other models (images, tabular data)."""
        if self.sequence_length is not None:
            return self.sequence_length
        shapes = {tuple(s.shape) for s in self.inputs if not s.dtype.startswith(("float", "bfloat"))}
        return shapes.pop()[0] if len(shapes) == 1 and len(next(iter(shapes))) == 1 else None

    @property
    def family(self) -> str:
        """`model_family` of this workload's model."""
        return model_family(self.model)

    def describe_inputs(self) -> list[dict[str, object]]:
        """The inputs as plain data for records, cards and reports: [{name, dtype, shape}]."""
        return [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in self.inputs]

    def sample_inputs(self, n: int | None = None, split: str = "val") -> dict[str, np.ndarray]:
        """The first `n` (default `sample_count`) samples of `split` as ONNX Runtime feeds (input name -> array, each in its own
        dtype): latency is timed on real data, not on random numbers of the right shape."""
        xs, _ = split_batch(next(iter(self.loader(split, batch_size=n or self.sample_count))))
        xs = xs if isinstance(xs, tuple) else (xs,)
        return {s.name: np.ascontiguousarray(x.numpy().astype(s.dtype, copy=False)) for s, x in zip(self.inputs, xs)}

    # ---- data access --------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        data = getattr(self, split)
        if data is None:
            raise ConfigError(f"workload.{split}", None, f"this workload has no {split} split")
        if isinstance(data, DataLoader):
            return data.dataset
        if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], (tuple, list)):
            data = (*data[0], data[1])  # ((x1, ..., xN), y)
        if isinstance(data, (tuple, list)) and len(data) >= 2 and all(isinstance(t, torch.Tensor) for t in data):
            *xs, y = data
            if any(len(x) != len(y) for x in xs):
                raise ConfigError(f"workload.{split}", f"{'/'.join(str(len(x)) for x in xs)} inputs and {len(y)} labels",
                                  "pass one label per input")
            return TensorDataset(*xs, y)
        if isinstance(data, Dataset):
            return data
        raise ConfigError(f"workload.{split}", type(data).__name__,
                          "pass a DataLoader, a Dataset or tensors (inputs, labels) / (x1, ..., xN, labels)")

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

    def batches(self, split: str, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches `(x1, ..., xN, y)` of `split` in order (`training.split_batch` takes them apart)."""
        yield from self.loader(split, batch_size=batch_size)

    def score(self, outputs: np.ndarray, targets: np.ndarray, groups: np.ndarray | None = None) -> float:
        """The stored score (higher is better): the task's, or the custom `metric`. `groups`: the values of the
        task's `group_by` input, row by row (a ranking task ranks within each user)."""
        if self.metric is not None:
            return self.metric(outputs, targets)
        return self.task.score(outputs, targets, groups=groups) if self.task.group_by else self.task.score(outputs, targets)

    # ---- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Cheap checks before any heavy compute: types, non-empty splits, example input runs."""
        if not isinstance(self.model, nn.Module):
            raise ConfigError("workload.model", type(self.model).__name__, "pass a torch.nn.Module")
        xs = self.example_inputs
        if not xs or not all(isinstance(x, torch.Tensor) and x.ndim >= 1 for x in xs):
            raise ConfigError("workload.example_input", type(self.example_input).__name__,
                              "pass a torch.Tensor batch (e.g. x[:1]), or a tuple of them, one per model input")
        for split in ("train", "val") + (("test",) if self.test is not None else ()):
            n = len(self.dataset(split))
            if n == 0:
                raise ConfigError(f"workload.{split}", "0 samples", "pass a non-empty split")
        self._check_input_spec()
        self.task.check_inputs(self.inputs)
        item = self.dataset("val")[0]
        if not isinstance(item, (tuple, list)) or len(item) != len(xs) + 1:
            got = len(item) - 1 if isinstance(item, (tuple, list)) else type(item).__name__
            raise ConfigError("workload.val", f"{got} inputs per sample",
                              f"the model takes {len(xs)} input(s): give samples (x1, ..., x{len(xs)}, label)")
        for sample, x in zip(item[:-1], xs):
            if tuple(torch.as_tensor(sample).shape) != tuple(x.shape[1:]):
                raise ConfigError(
                    "workload.example_input", tuple(x.shape),
                    f"must be a batch of the data's sample shape {tuple(torch.as_tensor(sample).shape)}, e.g. x[:1]",
                )
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(*xs)
        except Exception as exc:  # noqa: BLE001 - any failure here is the user's model
            raise ConfigError("workload.model", type(exc).__name__, f"the model must run on example_input ({exc})") from None
        width = self.task.check_output(out)
        for split in ("train", "val") + (("test",) if self.test is not None else ()):
            self._check_split(split, width=width)

    def _check_input_spec(self) -> None:
        """`input_spec` (when stated) and `sequence_length` against each other and `example_input`."""
        xs = self.example_inputs
        if self.input_spec is not None:
            spec = tuple(self.input_spec)
            bad = next((s for s in spec if not isinstance(s, InputSpec)), None)
            if bad is not None:
                raise ConfigError("workload.input_spec", bad, "state each input as InputSpec(name, dtype, shape)")
            if len(spec) != len(xs):
                raise ConfigError("workload.input_spec", f"{len(spec)} inputs",
                                  f"example_input has {len(xs)} tensor(s): state one InputSpec per model input, "
                                  "in the order forward() takes them")
            names = [s.name for s in spec]
            for s, x in zip(spec, xs):
                if not isinstance(s.name, str) or not _NAME_RE.match(s.name) or s.name == OUTPUT_NAME:
                    raise ConfigError("workload.input_spec", s.name, "name each input with letters, digits and '_' "
                                      f"(e.g. input_ids), not {OUTPUT_NAME!r}, the output's name")
                if names.count(s.name) > 1:
                    raise ConfigError("workload.input_spec", s.name, "give every input its own name")
                if s.dtype not in _DTYPES:
                    raise ConfigError("workload.input_spec", f"{s.name} dtype {s.dtype!r}",
                                      f"use one of {', '.join(_DTYPES)} (token ids: int64)")
                if not all(isinstance(d, int) and d > 0 for d in tuple(s.shape)):
                    raise ConfigError("workload.input_spec", f"{s.name} shape {s.shape!r}",
                                      "give the per-sample shape as positive ints, without the batch, e.g. (128,)")
                got = (_dtype_name(x), tuple(x.shape[1:]))
                if (s.dtype, tuple(s.shape)) != got:
                    raise ConfigError("workload.input_spec", s, f"example_input {s.name} is {got[0]} {got[1]} per "
                                      "sample; make the two agree")
        n = self.sequence_length
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError("workload.sequence_length", n, "give the tokens per sample as an int >= 1, or None")
            off = [s for s in self.inputs if not s.shape or s.shape[0] != n]
            if off:
                raise ConfigError("workload.sequence_length", n, f"input {off[0].name} has per-sample shape "
                                  f"{off[0].shape}; every input's first dimension must be the sequence length")

    def _check_split(self, split: str, *, width: int, max_samples: int = 4096) -> None:
        """Targets are what the task reads from `width` outputs (class indices the model can output, finite real
        values, ...); inputs are finite. Tensor splits are checked whole; other datasets on their first
        `max_samples` samples."""
        ds = self.dataset(split)
        if isinstance(ds, TensorDataset):
            *xs, y = ds.tensors
        else:
            items = [ds[i] for i in range(min(len(ds), max_samples))]
            xs = [torch.stack([torch.as_tensor(item[k]) for item in items]) for k in range(len(items[0]) - 1)]
            ys = [torch.as_tensor(b) for *_, b in items]
            y = torch.stack(ys) if ys and ys[0].ndim else torch.as_tensor([b.item() for b in ys])
        if len(xs) != len(self.inputs):
            raise ConfigError(f"workload.{split}", f"{len(xs)} inputs per sample",
                              f"the model takes {len(self.inputs)}: give samples (x1, ..., x{len(self.inputs)}, label)")
        for s, x in zip(self.inputs, xs):
            if (_dtype_name(x), tuple(x.shape[1:])) != (s.dtype, tuple(s.shape)):
                raise ConfigError(f"workload.{split} inputs", f"{s.name} {_dtype_name(x)} {tuple(x.shape[1:])}",
                                  f"the model's input {s.name} is {s.dtype} {tuple(s.shape)} per sample; "
                                  f"convert the data (e.g. x.to(torch.{s.dtype})) or fix example_input")
        self.task.check_targets(split, y, width)
        check_embedding_ids(self.model, self.inputs, xs, split)
        for x in xs:
            if torch.is_floating_point(x):
                bad = (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).nonzero()
                if len(bad):
                    raise ConfigError(f"workload.{split} inputs", f"{len(bad)} samples with NaN or inf (first: #{int(bad[0])})",
                                      "drop or repair those samples before the search")


def _dtype_name(x: torch.Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")
