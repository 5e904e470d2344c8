"""The one training loop under both the base models (`workloads`) and fine-tuning (`techniques`).

SGD with Nesterov momentum and a one-cycle schedule; the caller supplies the batch loss. Progress goes
through tqdm, drawn only on a terminal (CI logs, notebooks and pipes stay clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr, disabled when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def fit(model: nn.Module, loader: DataLoader, loss_fn: LossFn, *, epochs: int, lr: float, weight_decay: float,
        warmup: float, desc: str) -> None:
    """Train `model` in place for `epochs`; `loss_fn(x, y)` returns the batch loss. A non-finite loss raises."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=warmup)
    with progress(steps, desc) as bar:
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                loss = loss_fn(xb, yb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} (try a smaller learning rate)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    model.eval()


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.05,
                     desc: str = "train base") -> nn.Module:
    """Plain supervised training with cross-entropy and a one-cycle schedule (used for base models)."""
    fit(model, loader, lambda xb, yb: F.cross_entropy(model(xb), yb), epochs=epochs, lr=lr,
        weight_decay=5e-4, warmup=0.2, desc=desc)
    return model
