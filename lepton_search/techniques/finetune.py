"""Fine-tuning a pruned model: BatchNorm re-estimation and distillation from the unpruned base."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from lepton_search.errors import ConfigError
from lepton_search.space import FinetuneSettings
from lepton_search.tasks import Task, get_task
from lepton_search.techniques import families, layer_distill
from lepton_search.training import RECIPES, ModelInputs, fit, forward, split_batch


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


def recipe_for(model: nn.Module, settings: FinetuneSettings) -> FinetuneSettings:
    """`settings` with its optimizer and rate made concrete for `model`: "auto" is its family record's (`Family.optimizer`,
    `Family.lr`: AdamW for every built-in Transformer family), SGD for a model of no family; no `lr` is the record's
    rate, else the optimizer's (`training.RECIPES`).

    Example:
        >>> recipe_for(nn.Linear(4, 2), FinetuneSettings()).optimizer, recipe_for(nn.Linear(4, 2), FinetuneSettings()).lr
        ('sgd', 0.005)
    """
    family = families.family_of(model)
    optimizer = settings.optimizer
    if optimizer == "auto":
        optimizer = family.optimizer if family else "sgd"
    own = family.lr if family is not None and family.optimizer == optimizer else None
    lr = settings.lr if settings.lr is not None else own if own is not None else RECIPES[optimizer].lr
    return dataclasses.replace(settings, optimizer=optimizer, lr=lr, device=resolve_device(settings.device))


def resolve_device(device: str) -> str:
    """A concrete torch device for fine-tuning: "auto" is "cuda" when torch sees one, else "cpu"; a CUDA device
    torch cannot see is refused in one line (before anything trains: `recipe_for` runs when a search starts)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(device.partition(":")[2] or 0) >= seen:
            raise ConfigError("finetune.device", device, f"torch sees {seen} CUDA device(s) here; use cpu or auto")
    return device


def describe_recipe(settings: FinetuneSettings, n_train: int) -> str:
    """One line naming a resolved recipe, e.g. "AdamW lr 0.0002, linear warm-up 10% then decay, batch 16, ..."."""
    recipe = RECIPES[settings.optimizer]
    steps = ("linear warm-up {:.0%} then linear decay" if recipe.optimizer == "adamw" else
             "Nesterov momentum 0.9, one-cycle with {:.0%} warm-up").format(recipe.warmup)
    subset = settings.subset_of(n_train)
    per_epoch = n_train if subset is None else min(subset, n_train)
    return (f"{'AdamW' if recipe.optimizer == 'adamw' else 'SGD'} lr {settings.lr:g}, {steps}, weight decay "
            f"{recipe.weight_decay:g}, batch {settings.batch_size}, {per_epoch} train samples an epoch, "
            f"distillation T={settings.temperature:g} weight {settings.distill_weight:g}"
            + (f" + hidden states (weight {settings.hidden_weight:g})" if settings.hidden_weight else "")
            + ("" if settings.device == "cpu" else f"; on {settings.device}")
            + {"on": "; the head refitted first", "off": "",
               "auto": "; the head refitted first where encoder layers are dropped"}[settings.head_refit])


def distill(
    student: nn.Module, teacher: nn.Module, loader: DataLoader, *, epochs: int, lr: float = 0.005,
    temperature: float = 4.0, distill_weight: float = 0.7, desc: str = "fine-tune", horizon: int | None = None,
    resume: dict | None = None, on_epoch: Callable[[int, dict], None] | None = None, task: Task | None = None,
    optimizer: str = "sgd", student_view: Callable[[ModelInputs], ModelInputs] | None = None, device: str = "cpu",
    hidden_weight: float = 0.0,
) -> float:
    """Fine-tune `student` for `epochs` on `loader`, matching the teacher's outputs.

    Loss: the task's distillation loss (classification: w * T^2 * KL(student/T || teacher/T) + (1 - w) *
    cross-entropy; regression: w * MSE to the teacher + (1 - w) * MSE to the target). Returns seconds spent.
    `horizon`, `resume`, `on_epoch`: see `training.fit` (fine-tuning reuse across trials). `student_view`: what the
    student is fed of each batch (e.g. its first tokens, the `seq_len` knob); the teacher sees the whole batch.
    `device`: where both run while training (`resolve_device`); both are back on the CPU when it returns.
    `hidden_weight` > 0 adds that much of the encoder layers' hidden-state loss (`layer_distill`; the teacher then
    runs every batch, its cache aside).
    """
    start = time.perf_counter()
    if epochs <= 0 or (resume is not None and resume["epoch"] >= epochs):
        return 0.0
    teacher = teacher.eval()
    task = task or get_task(None)

    raw_teacher = teacher.teacher if isinstance(teacher, CachedTeacher) else teacher

    def loss_fn(xb: ModelInputs, yb: torch.Tensor) -> torch.Tensor:
        x_student = xb if student_view is None else student_view(xb)
        if not hidden_weight:
            with torch.no_grad():
                t_logits = forward(teacher, xb)
            s_logits = forward(student, x_student)
            return task.distill_loss(s_logits, t_logits, yb, temperature=temperature, weight=distill_weight)
        with torch.no_grad(), layer_distill.hidden_states(raw_teacher) as t_states:
            t_logits = forward(raw_teacher, xb)
        with layer_distill.hidden_states(student) as s_states:
            s_logits = forward(student, x_student)
        return (task.distill_loss(s_logits, t_logits, yb, temperature=temperature, weight=distill_weight)
                + hidden_weight * layer_distill.hidden_loss(s_states, t_states))

    recipe = RECIPES[optimizer]
    teacher.to(device)
    try:
        fit(student, loader, loss_fn, epochs=epochs, lr=lr, weight_decay=recipe.weight_decay, warmup=recipe.warmup,
            desc=desc, horizon=horizon, resume=resume, on_epoch=on_epoch, optimizer=optimizer, device=device)
    finally:
        teacher.to("cpu")  # the teacher serves the next trial, the student its export: both on the CPU again
    return time.perf_counter() - start


def output_head(model: nn.Module, x: ModelInputs) -> nn.Linear | None:
    """The model's head: its last `nn.Linear`, when that layer's output is the model's output (checked on `x`);
    None otherwise (a model that post-processes its last layer's output)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    seen: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            out = forward(model.eval(), x)
    finally:
        handle.remove()
    return linears[-1] if seen and seen[-1].shape == out.shape and torch.equal(seen[-1], out) else None


def refit_head(student: nn.Module, teacher: nn.Module, loader: Iterable, *,
               student_view: Callable[[ModelInputs], ModelInputs] | None = None, task: Task | None = None,
               temperature: float = 4.0, distill_weight: float = 0.7, max_iter: int = 100) -> int:
    """Refit the student's head (`output_head`) on the student's own features: the features at the head's input
    are computed once over `loader` (the student fed `student_view` of each batch), then the head alone minimises
    the task's distillation loss to the teacher's outputs and the labels, full batch, by L-BFGS from where it is.
    A probe-style head on a compressed encoder recovers in seconds, not an epoch (issue 22). Returns the samples
    used (0: no head found, nothing changed).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> x = torch.randn(256, 4)
        >>> refit_head(student, teacher, [(x, teacher(x).argmax(1))])
        256
        >>> bool((student(x).argmax(1) == teacher(x).argmax(1)).float().mean() > 0.9)
        True
    """
    task = task or get_task(None)
    first = next(iter(loader))
    view = student_view or (lambda xb: xb)
    head = output_head(student, view(split_batch(first)[0]))
    if head is None:
        return 0
    feats: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _o: feats.append(inputs[0].detach()))
    targets, labels = [], []
    try:
        with torch.no_grad():
            for batch in loader:
                xb, yb = split_batch(batch)
                forward(student.eval(), view(xb))
                targets.append(forward(teacher.eval(), xb))
                labels.append(yb)
    finally:
        handle.remove()
    x, t, y = torch.cat(feats), torch.cat(targets), torch.cat(labels)
    params = [p for p in head.parameters() if p.requires_grad]  # a shared weight (weight_clusters): its centroids
    opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = task.distill_loss(head(x), t, y, temperature=temperature, weight=distill_weight)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return len(x)


class CachedTeacher(nn.Module):
    """A frozen teacher that remembers its outputs per sample: every epoch of every trial distils from the same
    teacher on the same training samples, so each sample's outputs are computed once per search, not once per
    epoch and trial (for a cut-token student the teacher still runs at full length: about half of a MiniLM
    fine-tuning step's work). A sample is known by its input bytes; the cache holds one output row per sample.

    Example:
        >>> teacher = CachedTeacher(nn.Linear(4, 2).eval())
        >>> x = torch.randn(3, 4)
        >>> torch.equal(teacher(x), teacher(x)), teacher.misses
        (True, 3)
    """

    def __init__(self, teacher: nn.Module, compact: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        self.compact = compact  # what is kept of an output (`Task.compact_teacher`: a language model's top-k)
        self._outputs: dict[bytes, torch.Tensor] = {}
        self.misses = 0

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        keys = [b"".join(x[i].detach().cpu().numpy().tobytes() for x in xs) for i in range(len(xs[0]))]
        new = [i for i, k in enumerate(keys) if k not in self._outputs]
        if new:
            index = torch.tensor(new)
            with torch.no_grad():
                out = self.teacher(*(x[index] for x in xs))
                out = self.compact(out) if self.compact is not None else out
            for row, i in zip(out, new):
                self._outputs[keys[i]] = row.detach().cpu().clone()  # kept on the CPU whatever device computed it
            self.misses += len(new)
        return torch.stack([self._outputs[k] for k in keys]).to(xs[0].device)


def frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
