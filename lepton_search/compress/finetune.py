"""Training loops: BatchNorm re-estimation, distillation from the unpruned base, plain training."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lepton_search.progress import progress


def recalibrate_batchnorm(model: nn.Module, loader: Iterable, *, max_batches: int = 20) -> int:
    """Re-estimate BatchNorm running statistics on real data; returns the number of batches used.

    Pruning removes channels, so the statistics the BN layers carry no longer describe their inputs:
    a pruned CNN without this step falls to chance accuracy even when no fine-tuning follows.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    used = 0
    with torch.no_grad():
        for xb, _ in loader:
            model(xb)
            used += 1
            if used >= max_batches:
                break
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return used


def _fit(model: nn.Module, loader: DataLoader, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
         epochs: int, lr: float, weight_decay: float, warmup: float, desc: str) -> None:
    """SGD (Nesterov) with a one-cycle schedule; `loss_fn(x, y)` returns the batch loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * len(loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=warmup)
    bar = progress(total=steps, desc=desc)
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
    bar.close()
    model.eval()


def distill(
    student: nn.Module, teacher: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.01,
    temperature: float = 4.0, distill_weight: float = 0.7, desc: str = "fine-tune",
) -> float:
    """Fine-tune `student` for `epochs` on `loader`, matching the teacher's soft labels.

    Loss = w * T^2 * KL(student/T || teacher/T) + (1 - w) * cross-entropy. Returns seconds spent.
    """
    start = time.perf_counter()
    if epochs <= 0:
        return 0.0
    teacher = teacher.eval()

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher(xb)
        s_logits = student(xb)
        kd = F.kl_div(F.log_softmax(s_logits / temperature, dim=1), F.softmax(t_logits / temperature, dim=1),
                      reduction="batchmean") * temperature**2
        return distill_weight * kd + (1 - distill_weight) * F.cross_entropy(s_logits, yb)

    _fit(student, loader, loss_fn, epochs=epochs, lr=lr, weight_decay=1e-5, warmup=0.15, desc=desc)
    return time.perf_counter() - start


def train_classifier(model: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.05, desc: str = "train base") -> nn.Module:
    """Plain supervised training with cross-entropy and a one-cycle schedule (used for base models)."""
    _fit(model, loader, lambda xb, yb: F.cross_entropy(model(xb), yb), epochs=epochs, lr=lr,
         weight_decay=5e-4, warmup=0.2, desc=desc)
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
