"""Workload factories `lepton-search init` / `init_study` can import by name (`worker_workloads:plain_rnn`):
models on which some knobs cannot act, to show that the worker path narrows and refuses as `search()` does."""

from __future__ import annotations

import torch
from torch import nn

from lepton_search.workloads import InputSpec, Workload


class PlainRNN(nn.Module):
    """An Elman `nn.RNN` (which pruning leaves whole) and a linear head (kept whole as the classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(4, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x.view(-1, 8, 4))[0][:, -1])


def plain_rnn() -> Workload:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 32, generator=gen), torch.randint(0, 3, (96,), generator=gen)
    torch.manual_seed(0)
    return Workload("plain-rnn", PlainRNN().eval(), train=(x[:64], y[:64]), val=(x[64:], y[64:]),
                    example_input=x[:1])


def minilm_slice() -> Workload:
    """A 2-layer MiniLM-shaped BERT encoder (random weights) on 8 tokens."""
    from lepton_search.workloads.minilm import minilm_classifier

    gen = torch.Generator().manual_seed(0)
    ids, mask = torch.randint(1000, 20000, (16, 8), generator=gen), torch.ones(16, 8, dtype=torch.int64)
    y = torch.randint(0, 5, (16,), generator=gen)
    return Workload("minilm-slice", minilm_classifier(5, num_layers=2, seed=0), train=(ids, mask, y),
                    val=(ids, mask, y), example_input=(ids[:1], mask[:1]),
                    input_spec=(InputSpec("input_ids", "int64", (8,)), InputSpec("attention_mask", "int64", (8,))),
                    sequence_length=8)
