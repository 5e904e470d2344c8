"""A tiny token classifier on `nn.TransformerEncoder` (fast path on), with int64 `input_ids` + `attention_mask`.

The task: each sequence holds exactly one keyword token (1, 2 or 3) among filler tokens; its class is the
keyword. Sequences are 6..SEQ tokens long, padded with id 0 and mask 0. Trains in a few seconds on one thread.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from lepton_search.training import train_classifier
from lepton_search.workloads import InputSpec, Workload

SEQ, VOCAB, CLASSES = 12, 32, 3


class TinyTokenClassifier(nn.Module):
    """Embedding + 2-layer `nn.TransformerEncoder` (nested tensors and the eval fast path left on) + masked mean
    pool + linear head."""

    def __init__(self, vocab: int = VOCAB, d: int = 16, heads: int = 2, ff: int = 32, classes: int = CLASSES) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, SEQ, d))
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(d, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(input_ids) + self.pos, src_key_padding_mask=attention_mask == 0)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))


def token_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, SEQ), generator=g)
    lengths = torch.randint(6, SEQ + 1, (n,), generator=g)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    where = (torch.rand(n, generator=g) * lengths).long()
    ids[torch.arange(n), where] = labels + 1
    return ids * mask, mask, labels


@functools.cache  # trained once per test process; tests must not change it
def token_workload(*, epochs: int = 12, seed: int = 0) -> Workload:
    torch.manual_seed(seed)
    train, val, test = token_data(512, seed), token_data(192, seed + 1), token_data(192, seed + 2)
    model = TinyTokenClassifier()
    wl = Workload("tiny-token-encoder", model, train=train, val=val, test=test,
                  example_input=(val[0][:1].clone(), val[1][:1].clone()), batch_size=64,
                  input_spec=(InputSpec("input_ids", "int64", (SEQ,)), InputSpec("attention_mask", "int64", (SEQ,))),
                  sequence_length=SEQ, info={"task": "keyword token classification (synthetic)"})
    train_classifier(model, wl.loader("train", shuffle=True, seed=seed), epochs=epochs, lr=0.05)
    return wl
