"""The one training loop under both the base models (`workloads`) and fine-tuning (`techniques`).

SGD with Nesterov momentum and a one-cycle schedule; the caller supplies the batch loss. Progress goes
through tqdm, drawn only on a terminal (CI logs, notebooks and pipes stay clean).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

ModelInputs = torch.Tensor | tuple[torch.Tensor, ...]  # one input tensor, or one per model input (ids, mask...)
LossFn = Callable[[ModelInputs, torch.Tensor], torch.Tensor]


def split_batch(batch: Sequence[torch.Tensor]) -> tuple[ModelInputs, torch.Tensor]:
    """(inputs, labels) of a batch `(x1, ..., xN, y)`: labels last; one input stays a bare tensor.

    Example:
        >>> ids, mask, y = torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), torch.tensor([0, 1])
        >>> x, labels = split_batch((ids, mask, y))
        >>> len(x), labels.tolist()
        (2, [0, 1])
    """
    *xs, y = batch
    return (xs[0] if len(xs) == 1 else tuple(xs)), y


def forward(model: nn.Module, x: ModelInputs) -> torch.Tensor:
    """`model(x)` for one input, `model(*x)` for several."""
    return model(*x) if isinstance(x, tuple) else model(x)


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar on stderr, disabled when stderr is not a terminal."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False)


def loader_generator(loader: DataLoader) -> torch.Generator | None:
    """The generator that shuffles `loader` (None when it does not shuffle with one)."""
    sampler = getattr(loader, "sampler", None)
    inner = getattr(sampler, "sampler", None)  # BatchSampler(RandomSampler(...)) of Workload.loader
    for candidate in (getattr(inner, "generator", None), getattr(sampler, "generator", None), loader.generator):
        if isinstance(candidate, torch.Generator):
            return candidate
    return None


def _warmup_share(warmup: float, total_steps: int) -> float:
    """`warmup`, unless its phase would end on step 1 exactly: OneCycleLR then divides by zero (5 batches at
    warm-up 0.2, a tiny fine-tune subset); a step and a half of warm-up instead."""
    return min(0.75, 1.5 / total_steps) if abs(warmup * total_steps - 1.0) < 1e-9 else warmup


def fit(model: nn.Module, loader: DataLoader, loss_fn: LossFn, *, epochs: int, lr: float, weight_decay: float,
        warmup: float, desc: str, horizon: int | None = None, resume: dict | None = None,
        on_epoch: Callable[[int, dict], None] | None = None) -> None:
    """Train `model` in place up to epoch `epochs`; `loss_fn(x, y)` returns the batch loss (`x`: the batch's inputs,
    see `split_batch`). A non-finite loss raises.

    The one-cycle schedule spans `horizon` epochs (default `epochs`), so a run stopped at epoch e and one
    resumed from it follow the same schedule. `resume` (a state `on_epoch` was given: optimizer, scheduler,
    the loader's generator and the epoch reached) continues a run; the caller restores the weights.
    `on_epoch(epoch, state)` is called after each epoch.
    """
    horizon = max(horizon or epochs, epochs)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    total = max(horizon * len(loader), 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                pct_start=_warmup_share(warmup, total))
    gen = loader_generator(loader)
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if gen is not None and resume.get("generator") is not None:
            gen.set_state(resume["generator"])
        start = int(resume["epoch"])
    with progress((epochs - start) * len(loader), desc) as bar:
        for epoch in range(start, epochs):
            model.train()
            for batch in loader:
                loss = loss_fn(*split_batch(batch))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} (try a smaller learning rate)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
            if on_epoch is not None:
                on_epoch(epoch + 1, {"epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "generator": None if gen is None else gen.get_state()})
    model.eval()


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.05,
                     desc: str = "train base") -> nn.Module:
    """Plain supervised training with cross-entropy and a one-cycle schedule (used for base models)."""
    fit(model, loader, lambda xb, yb: F.cross_entropy(forward(model, xb), yb), epochs=epochs, lr=lr,
        weight_decay=5e-4, warmup=0.2, desc=desc)
    return model
