"""Fine-tuning a pruned model: BatchNorm re-estimation and distillation from the unpruned base."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from lepton_search.tasks import Task, get_task
from lepton_search.training import ModelInputs, fit, forward, split_batch


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
        for batch in loader:
            forward(model, split_batch(batch)[0])
            used += 1
            if used >= max_batches:
                break
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return used


def distill(
    student: nn.Module, teacher: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.01,
    temperature: float = 4.0, distill_weight: float = 0.7, desc: str = "fine-tune", horizon: int | None = None,
    resume: dict | None = None, on_epoch: Callable[[int, dict], None] | None = None, task: Task | None = None,
) -> float:
    """Fine-tune `student` for `epochs` on `loader`, matching the teacher's outputs.

    Loss: the task's distillation loss (classification: w * T^2 * KL(student/T || teacher/T) + (1 - w) *
    cross-entropy; regression: w * MSE to the teacher + (1 - w) * MSE to the target). Returns seconds spent.
    `horizon`, `resume`, `on_epoch`: see `training.fit` (fine-tuning reuse across trials).
    """
    start = time.perf_counter()
    if epochs <= 0 or (resume is not None and resume["epoch"] >= epochs):
        return 0.0
    teacher = teacher.eval()
    task = task or get_task(None)

    def loss_fn(xb: ModelInputs, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = forward(teacher, xb)
        s_logits = forward(student, xb)
        return task.distill_loss(s_logits, t_logits, yb, temperature=temperature, weight=distill_weight)

    fit(student, loader, loss_fn, epochs=epochs, lr=lr, weight_decay=1e-5, warmup=0.15, desc=desc, horizon=horizon,
        resume=resume, on_epoch=on_epoch)
    return time.perf_counter() - start


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
