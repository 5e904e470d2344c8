"""`fashion-vit`: a small Vision Transformer (Hugging Face `ViTForImageClassification`) trained from scratch on
Fashion-MNIST (Debian `dataset-fashion-mnist`; the same 55k / 5k / 10k split as `fashion-mnist-cnn`).

The second Transformer workload: a 10,000-image test split measures an accuracy drop with a standard error of
~0.3 pt (BBC News's 426 articles: ~1 pt). 28x28 images cut into 4x4 patches make 49 tokens plus the class token;
6 pre-norm layers of width 128 (4 heads of 32, FFN 512) - the layout of ViT-Tiny at a third of its width, sized
so that an epoch takes ~3 min on a 2-core CPU. No pretrained ViT ships offline, so the base is trained here:
AdamW with warm-up and linear decay, the Transformer recipe of `training.RECIPES` at a from-scratch rate.

The model goes into `Workload` as it comes from `transformers` (wrapped by `workloads.hf.HFLogits`, input
`pixel_values`), so it exercises the path a user's own Hugging Face vision model takes. `prune_ratio` removes
heads and FFN channels and `layers` drops top layers (`techniques.prune_transformer`); `seq_len` does not apply
(its input is an image, not tokens) and is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lepton_search.training import fit, forward
from lepton_search.workloads._base import Workload
from lepton_search.workloads._cache import cached_model
from lepton_search.workloads.fashion_mnist import seeded_splits
from lepton_search.workloads.minilm import transformers_module


def vit_config(*, hidden: int = 128, layers: int = 6, heads: int = 4, ffn: int = 512, patch: int = 4,
               num_classes: int = 10) -> object:
    """The `transformers.ViTConfig` of the workload's model (28x28 grey images)."""
    return transformers_module("fashion-vit").ViTConfig(
        image_size=28, patch_size=patch, num_channels=1, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ffn, num_labels=num_classes, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)


def fashion_vit(*, data_dir: str | Path | None = None, hidden: int = 128, layers: int = 6, heads: int = 4,
                ffn: int = 512, patch: int = 4, base_epochs: int = 6, lr: float = 1e-3, batch_size: int = 128,
                val_size: int = 5000, limit: int | None = None, seed: int = 0, verbose: bool = True) -> Workload:
    """`fashion-vit`: train 55k / validation 5k (seeded split of the 60k train set) / test 10k; the base is trained
    once for `base_epochs` and cached. `limit` keeps the first samples of each split (train and validation are a
    seeded shuffle already; tiny versions for tests)."""
    transformers = transformers_module("fashion-vit")
    parts = seeded_splits(data_dir, val_size=val_size, seed=seed)
    if limit is not None:
        parts = {s: (px[:limit], py[:limit]) for s, (px, py) in parts.items()}
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(
        vit_config(hidden=hidden, layers=layers, heads=heads, ffn=ffn, patch=patch))
    wl = Workload(
        "fashion-vit", model, train=parts["train"], val=parts["val"], test=parts["test"],
        example_input=parts["val"][0][:1].clone(), batch_size=256,
        info={"family": "transformer", "dataset": "Fashion-MNIST", "pretrained": "none (trained here)",
              "layers": layers, "tokens": (28 // patch) ** 2 + 1,
              "base_training": f"AdamW lr {lr}, {base_epochs} epochs, batch {batch_size}",
              **{s: len(parts[s][1]) for s in parts}},
    )

    def _train(m: nn.Module) -> nn.Module:
        torch.manual_seed(seed)
        loader = wl.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
        fit(m, loader, lambda xb, yb: F.cross_entropy(forward(m, xb), yb), epochs=base_epochs, lr=lr,
            weight_decay=0.05, warmup=0.1, desc="train base fashion-vit", optimizer="adamw")
        return m

    key = (f"fashion-vit-d{hidden}-L{layers}-h{heads}-f{ffn}-p{patch}-e{base_epochs}-lr{lr}-b{batch_size}"
           f"-v{val_size}-n{limit or 'all'}-s{seed}")
    wl.model = cached_model(key, wl.model, _train, verbose=verbose)
    return wl
