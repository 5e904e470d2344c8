"""Workload factories that are wrong on purpose (bad-input corpus, failing-candidate tests).

Imported by `--workload failing_workloads:NAME` with this folder on sys.path.
"""

from __future__ import annotations

import torch
from torch import nn

from lepton_search.workloads import Workload

FEATURES, CLASSES = 64, 10


def _data(n: int = 240, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    return {"train": (x[:160], y[:160]), "val": (x[160:], y[160:])}


def _mlp(middle: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Linear(FEATURES, 32), nn.ReLU()] + ([middle] if middle is not None else []) + [nn.Linear(32, CLASSES)]
    return nn.Sequential(*layers).eval()


def _workload(name: str, model: nn.Module, **kw: object) -> Workload:
    d = _data()
    args = {"train": d["train"], "val": d["val"], "example_input": d["val"][0][:1].clone()}
    args.update(kw)
    return Workload(name, model, **args)


def empty_data() -> Workload:
    return _workload("empty-data", _mlp(), train=(torch.empty(0, FEATURES), torch.empty(0, dtype=torch.int64)))


def wrong_input_shape() -> Workload:
    return _workload("wrong-shape", _mlp(), example_input=torch.randn(1, 32))


class _NoOnnx(nn.Module):
    """Runs in eager PyTorch, but ONNX has no exporter for `special_i1e`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i1e(x)


def untraceable() -> Workload:
    return _workload("untraceable", _mlp(_NoOnnx()))


class NanWhenNarrow(nn.Module):
    """Identity at full width; adds sqrt(negative) = NaN once pruning has removed channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sqrt(torch.tensor(float(x.shape[1] - self.width)))


class FixedScale(nn.Module):
    """A per-channel buffer pruning does not know about: any pruned width breaks the forward pass."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def nan_when_pruned() -> Workload:
    return _workload("nan-when-pruned", _mlp(NanWhenNarrow(32)))


def breaks_when_pruned() -> Workload:
    return _workload("breaks-when-pruned", _mlp(FixedScale(32)))


def labels_beyond_classes() -> Workload:
    """7 label values for a model with 3 outputs (was: a 'successful' study whose fine-tuned trials failed)."""
    d = _data()
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    return _workload("labels-beyond", model, train=(d["train"][0], d["train"][1] % 7), val=(d["val"][0], d["val"][1] % 3))


def float_labels() -> Workload:
    d = _data()
    return _workload("float-labels", _mlp(), train=(d["train"][0], d["train"][1].float()))


def nan_inputs() -> Workload:
    d = _data()
    x = d["val"][0].clone()
    x[3, 5] = float("nan")
    return _workload("nan-inputs", _mlp(), val=(x, d["val"][1]))


def fewer_labels() -> Workload:
    """A val split of 80 inputs and 50 labels (was: a bare AssertionError 'Size mismatch between tensors')."""
    d = _data()
    return _workload("fewer-labels", _mlp(), val=(d["val"][0], d["val"][1][:50]))


class _TokenBag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(50, 16), nn.Linear(16, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head((self.emb(input_ids) * attention_mask.unsqueeze(-1)).sum(1))


def token_ids_int32() -> Workload:
    """Two int64 inputs declared; the train split holds int32 token ids."""
    from lepton_search.workloads import InputSpec

    g = torch.Generator().manual_seed(0)
    ids, mask, y = torch.randint(0, 50, (64, 8), generator=g), torch.ones(64, 8, dtype=torch.long), torch.randint(0, CLASSES, (64,))
    spec = (InputSpec("input_ids", "int64", (8,)), InputSpec("attention_mask", "int64", (8,)))
    return Workload("token-ids-int32", _TokenBag().eval(), train=(ids.int(), mask, y), val=(ids, mask, y),
                    example_input=(ids[:1], mask[:1]), input_spec=spec, sequence_length=8)
