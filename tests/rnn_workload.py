"""A tiny LSTM token classifier (the shape of `bbc-lstm`, one int64 input `input_ids`) that trains in seconds.

The task: each sequence holds one keyword token (1, 2 or 3) among filler tokens, padded with id 0 at the end;
its class is the keyword. An LSTM must carry the keyword to the end through the masked mean.
"""

from __future__ import annotations

import torch

from lepton_search.training import train_classifier
from lepton_search.workloads import InputSpec, Workload
from lepton_search.workloads.bbc import LSTMClassifier

SEQ, VOCAB, CLASSES = 12, 40, 3


def keyword_ids(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, SEQ), generator=g)
    lengths = torch.randint(6, SEQ + 1, (n,), generator=g)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    where = (torch.rand(n, generator=g) * lengths).long()
    ids[torch.arange(n), where] = labels + 1
    ids[torch.arange(SEQ)[None, :] >= lengths[:, None]] = 0
    return ids, labels


def lstm_workload(*, hidden: int = 32, epochs: int = 6, seed: int = 0) -> Workload:
    torch.manual_seed(seed)
    model = LSTMClassifier(vocab=VOCAB, embed=16, hidden=hidden, classes=CLASSES)
    wl = Workload("tiny-lstm", model, train=keyword_ids(768, seed), val=keyword_ids(256, seed + 1),
                  test=keyword_ids(256, seed + 2), example_input=keyword_ids(1, seed + 3)[0], batch_size=64,
                  input_spec=(InputSpec("input_ids", "int64", (SEQ,)),), sequence_length=SEQ,
                  info={"task": "keyword token classification (synthetic)"})
    train_classifier(model, wl.loader("train", shuffle=True, seed=seed), epochs=epochs, lr=0.5)
    return wl
