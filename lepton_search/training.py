"""The one training loop under both the base models (`workloads`) and fine-tuning (`techniques`).

Two recipes (`RECIPES`): SGD with Nesterov momentum and a one-cycle schedule (CNNs, RNNs, MLPs), and AdamW with
linear warm-up then linear decay (pretrained Transformers: SGD at a rate that moves a CNN wrecks them, and one
that keeps them barely moves; the schedule of `transformers.get_linear_schedule_with_warmup`). The caller
supplies the batch loss. Progress: tqdm bars on a terminal or in a notebook (`tqdm.auto`), else a line per
epoch on the "lepton_search" logger (`lepton_search.logging`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lepton_search.logging import bars_shown, log_stage

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


@dataclass(frozen=True)
class Recipe:
    """How `fit` steps: the optimizer, its default peak rate, weight decay and warm-up share."""

    optimizer: str  # "sgd" | "adamw"
    lr: float
    weight_decay: float
    warmup: float


# sgd: 0.005 at batch 16 lost 0.82 pt on the demo CNN where 0.01 at batch 128 lost 2.42 (experiments/demo_finetune.py).
# adamw: 2e-4, above the 2e-5..5e-5 of a full BERT fine-tune (Devlin et al. 2019): a compressed student has one or
#   two epochs to move. On bbc-minilm cut to 64 tokens and 3 layers, INT8, 1 epoch: 96.71% val / 95.31% test at
#   2e-4, 96.95% / 93.43% at 5e-5 (one run each; experiments/transformer_front.py uses it). Warm-up 10%.
RECIPES = {"sgd": Recipe("sgd", lr=0.005, weight_decay=1e-5, warmup=0.15),
           "adamw": Recipe("adamw", lr=2e-4, weight_decay=0.01, warmup=0.1)}


EPOCH_LINE_EVERY_S = 10.0  # off a terminal, an epoch line at most this often (and always for the last epoch)


def progress(total: int, desc: str) -> tqdm:
    """A tqdm bar (`tqdm.auto`: a widget in Jupyter), drawn only where someone watches: a terminal or a notebook,
    with progress on (see `lepton_search.logging`). Elsewhere callers log a line per stage instead."""
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not bars_shown(), leave=False)


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
        on_epoch: Callable[[int, dict], None] | None = None, optimizer: str = "sgd", device: str = "cpu") -> None:
    """Train `model` in place up to epoch `epochs`; `loss_fn(x, y)` returns the batch loss (`x`: the batch's inputs,
    see `split_batch`). A non-finite loss raises.

    The one-cycle schedule spans `horizon` epochs (default `epochs`), so a run stopped at epoch e and one
    resumed from it follow the same schedule. `resume` (a state `on_epoch` was given: optimizer, scheduler,
    the loader's generator and the epoch reached) continues a run; the caller restores the weights.
    `on_epoch(epoch, state)` is called after each epoch. `device`: where the model and each batch go while
    training; the model is back on the CPU when it returns.
    """
    model.to(device)
    try:
        _fit(model, loader, loss_fn, epochs=epochs, lr=lr, weight_decay=weight_decay, warmup=warmup, desc=desc,
             horizon=horizon, resume=resume, on_epoch=on_epoch, optimizer=optimizer, device=device)
    finally:
        model.to("cpu").eval()


def _fit(model: nn.Module, loader: DataLoader, loss_fn: LossFn, *, epochs: int, lr: float, weight_decay: float,
         warmup: float, desc: str, horizon: int | None, resume: dict | None,
         on_epoch: Callable[[int, dict], None] | None, optimizer: str, device: str) -> None:
    horizon = max(horizon or epochs, epochs)
    total = max(horizon * len(loader), 1)
    opt, sched = _stepper(model, optimizer, lr=lr, weight_decay=weight_decay, warmup=warmup, total=total)
    gen = loader_generator(loader)
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if gen is not None and resume.get("generator") is not None:
            gen.set_state(resume["generator"])
        start = int(resume["epoch"])
    last_line = time.perf_counter()
    with progress((epochs - start) * len(loader), desc) as bar:
        for epoch in range(start, epochs):
            model.train()
            began, losses = time.perf_counter(), []
            for batch in loader:
                loss = loss_fn(*split_batch([t.to(device, non_blocking=True) for t in batch]))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{desc}: loss became {loss.item()} (try a smaller learning rate)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                losses.append(loss.detach())
            if epoch + 1 == epochs or time.perf_counter() - last_line >= EPOCH_LINE_EVERY_S:  # 30 short epochs: few lines
                log_stage("%s epoch %d/%d %.1f s (mean loss %.4f)", desc, epoch + 1, epochs,
                          time.perf_counter() - began, torch.stack(losses).mean().item() if losses else float("nan"))
                last_line = time.perf_counter()
            if on_epoch is not None:
                on_epoch(epoch + 1, {"epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "generator": None if gen is None else gen.get_state()})


def _stepper(model: nn.Module, optimizer: str, *, lr: float, weight_decay: float, warmup: float,
             total: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and per-step schedule of a recipe (`RECIPES`), over `total` steps."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                        pct_start=_warmup_share(warmup, total))
    if optimizer == "adamw":
        # No decay on biases and LayerNorm weights (1-d tensors), as BERT's recipe.
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
        warm = max(1, round(warmup * total))
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm))))
    raise ValueError(f"optimizer must be one of {sorted(RECIPES)}, got {optimizer!r}")


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.05,
                     desc: str = "train base") -> nn.Module:
    """Plain supervised training with cross-entropy and a one-cycle schedule (used for base models)."""
    fit(model, loader, lambda xb, yb: F.cross_entropy(forward(model, xb), yb), epochs=epochs, lr=lr,
        weight_decay=5e-4, warmup=0.2, desc=desc)
    return model
