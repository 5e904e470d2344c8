"""Tasks: what a model's outputs mean, how they are scored, and how a compressed copy learns them back.

A `Task` owns everything that used to assume classification: the check of a split's targets against the
model's outputs, its metric (scikit-learn's scorer convention: the stored score is *higher is better*, a loss
is stored negated, as `neg_root_mean_squared_error`), how that metric is shown (its name, its sign, its unit),
what a "drop" is, and the fine-tune and distillation losses. The search stores and compares scores only, so
Pareto fronts, early rejection and samplers work unchanged for any task; reports and cards show the metric.

Built in: `"classification"` (the default: top-1 accuracy of logits, drops in points, KL + cross-entropy
distillation) and `"regression"` (RMSE of the outputs, drops in the target's unit, MSE to the teacher's and the
true outputs); for recommenders `"binary"` (click-through: one logit, AUC and log-loss, BCE training) and
`"ranking"` (scores ranked per user: HR@k and NDCG@k under NCF's leave-one-out protocol, rows grouped by the
`user` input); for causal language models `"lm"` (next-token log-loss, stored negated, perplexity shown; scored
batch by batch through `summarize`, never a split's (batch, tokens, vocabulary) logits at once; distilled on the
teacher's top-k next-token distribution). A new task is one `Task` subclass registered by name (`register_task`).

Example:
    >>> import numpy as np
    >>> reg = get_task("regression")
    >>> score = reg.score(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]]))
    >>> score, reg.display(score), reg.drop(base_score=-0.5, score=score)
    (-1.0, 1.0, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lepton_search.errors import ConfigError, did_you_mean

IGNORE = -100  # a target position without a next token (torch's cross-entropy ignore_index)


def accuracy_standard_error(accuracy: float, n: int) -> float:
    """One standard error of an accuracy measured on `n` samples (binomial): sqrt(p (1 - p) / n).

    Example:
        >>> round(accuracy_standard_error(0.92, 5000), 4)
        0.0038
    """
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / max(n, 1))


def format_drop(drop: float, unit: str) -> str:
    """A drop with its unit: points to two decimals, any other unit to four significant digits."""
    return f"{drop:+.2f} pt" if unit == "pt" else f"{drop:+.4g}{' ' + unit if unit else ''}"


class Task:
    """What a model's outputs mean: the interface every layer types against, with classification's behaviour as
    its defaults (`Classification` names it); subclasses override what differs. Stateless: one instance serves
    every model."""

    name = "classification"
    metric = "accuracy"  # what the score measures, as reports name it
    short = "acc"  # on a trial's log line
    score_name = "accuracy"  # the stored score, as Optuna's metric names (the dashboard's axes) show it
    greater_is_better = True  # of the metric as shown (the stored score is always higher-is-better)
    drop_unit = "pt"  # a drop of 0.012 in accuracy is 1.2 pt
    group_by: str | None = None  # an input whose values group rows for scoring (ranking: the user); None: none
    batch_limit: int | None = None  # rows scored per call at most (a language model's outputs are large); None: any
    # whether refitting the head (recovery) serves it: a language model's head is its vocabulary projection, often
    # tied to the input embeddings, and a full-batch refit over tokens x vocabulary would not fit in memory
    head_refit = True

    # ---- data ------------------------------------------------------------------------------
    def check_output(self, out: torch.Tensor) -> int:
        """The model's output on the example input is what this task reads; returns its width."""
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            raise ConfigError("workload.model", getattr(out, "shape", type(out).__name__),
                              "must return (batch, classes) logits for task 'classification' (a regressor: "
                              "task='regression'; a causal language model's (batch, tokens, vocabulary): task='lm')")
        return int(out.shape[1])

    def check_inputs(self, inputs: Any) -> None:
        """A one-line error when the model's inputs (`InputSpec`s) lack what this task reads (ranking: user, item)."""

    def check_targets(self, split: str, y: torch.Tensor, width: int) -> None:
        """A one-line error (field, value, fix) when `y` cannot be this task's targets for `width` outputs."""
        field = f"workload.{split} labels"
        if y.dtype == torch.bool:
            raise ConfigError(field, "bool", "pass class indices as integers, e.g. labels.long()")
        if y.is_floating_point():
            raise ConfigError(field, str(y.dtype).removeprefix("torch."),
                              "pass class indices as integers, e.g. labels.long() (real-valued targets: "
                              "task='regression')")
        if y.ndim != 1:
            raise ConfigError(field, tuple(y.shape), "pass one class index per sample (1-D)")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= width:
            raise ConfigError(field, f"{low}..{high}",
                              f"the model outputs {width} classes, so labels must lie in 0..{width - 1}; "
                              "fix the labels or the model's last layer")

    # ---- metric ----------------------------------------------------------------------------
    def summarize(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """What is kept of one batch's outputs until the split is scored (`score` and `correct` get these rows,
        concatenated): the outputs themselves, unless they are too large to keep (a language model's)."""
        return outputs

    def compact_teacher(self, outputs: torch.Tensor) -> torch.Tensor:
        """What a cached teacher keeps of its outputs per sample (`finetune.CachedTeacher`); `distill_loss` takes
        it as the teacher's outputs. The outputs themselves, unless they are too large to keep."""
        return outputs

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """The stored score of `outputs` against `targets`: higher is better."""
        return float((outputs.argmax(axis=1) == targets).mean())

    def correct(self, outputs: np.ndarray, targets: np.ndarray) -> int | None:
        """How many samples were right (classification); None where the metric is not a count."""
        return int((outputs.argmax(axis=1) == targets).sum())

    def display(self, score: float) -> float:
        """The metric as a person reads it (RMSE, not its negation)."""
        return score

    def drop(self, base_score: float, score: float) -> float:
        """How much worse than the base, in `drop_unit` (> 0: worse)."""
        return (base_score - score) * 100.0

    def score_scale(self) -> float:
        """Drop units per score unit (classification: 100, a fraction in points)."""
        return 100.0 if self.drop_unit == "pt" else 1.0

    def drop_steps(self, base_score: float) -> tuple[float, ...]:
        """The drops reports pick "the fastest within": 0.5 / 1 / 2 pt; for a metric in its own unit, 1% / 2% /
        5% of the base's value."""
        if self.drop_unit == "pt":
            return (0.5, 1.0, 2.0)
        size = abs(self.display(base_score)) or 1.0
        return tuple(float(f"{size * share:.3g}") for share in (0.01, 0.02, 0.05))

    def format_drop(self, drop: float) -> str:
        """A measured drop as logs and picks print it: '+1.33 pt', '+0.0123'."""
        return format_drop(drop, self.drop_unit)

    def drop_label(self, drop: float) -> str:
        """`drop` with its unit: '1 pt', '0.0123 rmse'."""
        return f"{drop:g} pt" if self.drop_unit == "pt" else f"{drop:.3g} {self.drop_unit or self.metric}"

    def score_tolerance(self, score: float, n: int) -> float:
        """One standard error of the score on `n` samples (the early-rejection rule's tolerance); 0 when the
        metric has no closed form here, which makes the rule reject less, never more. Classification: the
        binomial sqrt(p (1 - p) / n)."""
        return accuracy_standard_error(score, n)

    # ---- training --------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float, weight: float) -> torch.Tensor:
        """w * T^2 * KL(student/T || teacher/T) + (1 - w) * cross-entropy."""
        kd = F.kl_div(F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1),
                      reduction="batchmean") * temperature**2
        return weight * kd + (1 - weight) * self.loss(student, targets)

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "metric": self.metric, "greater_is_better": self.greater_is_better,
                "drop_unit": self.drop_unit}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Regression(Task):
    """Real-valued outputs, (batch,) or (batch, k) targets; RMSE (stored negated); MSE distillation."""

    name = "regression"
    metric = "rmse"
    short = "rmse"
    score_name = "neg_rmse"
    greater_is_better = False
    drop_unit = ""  # the target's own unit: an RMSE 0.8 above the base's is a drop of 0.8

    def check_output(self, out: torch.Tensor) -> int:
        if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or not out.is_floating_point():
            raise ConfigError("workload.model", getattr(out, "shape", type(out).__name__),
                              "must return (batch,) or (batch, outputs) real values for task 'regression'")
        return 1 if out.ndim == 1 else int(out.shape[1])

    def check_targets(self, split: str, y: torch.Tensor, width: int) -> None:
        field = f"workload.{split} targets"
        if not y.is_floating_point():
            raise ConfigError(field, str(y.dtype).removeprefix("torch."),
                              "a regression target is real-valued (e.g. y.float()); class ids: task='classification'")
        if not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y)).sum())
            raise ConfigError(field, f"{bad} non-finite values (NaN/inf)", "drop or impute those samples first")
        per_sample = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
        if y.ndim > 2 or per_sample != width:
            raise ConfigError(field, tuple(y.shape), f"the model gives {width} value(s) per sample: pass targets of "
                              f"shape (n,) or (n, {width})")

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        diff = outputs.reshape(len(outputs), -1) - targets.reshape(len(targets), -1)
        return -float(np.sqrt(np.mean(diff.astype(np.float64) ** 2)))

    def correct(self, outputs: np.ndarray, targets: np.ndarray) -> int | None:
        return None

    def display(self, score: float) -> float:
        return -score

    def drop(self, base_score: float, score: float) -> float:
        return base_score - score  # RMSE - base RMSE

    def score_tolerance(self, score: float, n: int) -> float:
        return 0.0

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.reshape(targets.shape), targets)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float, weight: float) -> torch.Tensor:
        """w * MSE(student, teacher) + (1 - w) * MSE(student, target) (no temperature for real values)."""
        return weight * F.mse_loss(student, teacher) + (1 - weight) * self.loss(student, targets)


class Binary(Task):
    """Click-through: one logit per sample ((batch,) or (batch, 1)), targets 0/1 floats; AUC (stored) and log-loss;
    BCE training, distillation to the teacher's logits by MSE."""

    name = "binary"
    metric = "auc"
    short = "auc"
    score_name = "auc"
    drop_unit = "pt"  # an AUC 0.005 below the base's is a drop of 0.5 pt

    def check_output(self, out: torch.Tensor) -> int:
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or (
                out.ndim not in (1, 2) or (out.ndim == 2 and out.shape[1] != 1)):
            raise ConfigError("workload.model", getattr(out, "shape", type(out).__name__),
                              f"must return one logit per sample, (batch,) or (batch, 1), for task {self.name!r}")
        return 1

    def check_targets(self, split: str, y: torch.Tensor, width: int) -> None:
        field = f"workload.{split} targets"
        if not y.is_floating_point():
            raise ConfigError(field, str(y.dtype).removeprefix("torch."),
                              f"task {self.name!r} reads a 0/1 relevance per row as floats (e.g. clicked.float()); "
                              "class ids: task='classification'")
        if not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y)).sum())
            raise ConfigError(field, f"{bad} non-finite values (NaN/inf)", "drop or impute those samples first")
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise ConfigError(field, tuple(y.shape), "pass one 0/1 target per sample, shape (n,)")
        off = y[(y != 0) & (y != 1)]
        if len(off):
            raise ConfigError(field, float(off[0]), "targets must be 0 or 1 (clicked / relevant or not)")

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(targets.reshape(-1), outputs.reshape(-1)))

    def correct(self, outputs: np.ndarray, targets: np.ndarray) -> int | None:
        return None

    def score_tolerance(self, score: float, n: int) -> float:
        return 0.0

    def log_loss(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        """Mean binary cross-entropy of the logits (nats)."""
        z, y = outputs.reshape(-1).astype(np.float64), targets.reshape(-1).astype(np.float64)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.reshape(targets.shape), targets)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float, weight: float) -> torch.Tensor:
        """w * MSE(student logits, teacher logits) + (1 - w) * BCE(student, target)."""
        return weight * F.mse_loss(student, teacher) + (1 - weight) * self.loss(student, targets)


class Ranking(Binary):
    """Scores of (user, item) rows ranked within each user: HR@k (stored, a fraction: drops in points) and NDCG@k.

    Evaluation splits hold, per user, the held-out item(s) (target 1) among sampled negatives (target 0), as NCF's
    leave-one-out protocol with 99 sampled negatives; rows are grouped by the `user` input, which the scorer
    reads (`group_by`). A negative scoring the same as the positive counts as ranked above it (a constant model
    scores 0). Trains like `binary` (BCE on the pointwise 0/1 targets, MSE to the teacher's scores).

    Example:
        >>> r = Ranking(k=1)
        >>> r.score(np.array([0.9, 0.1, 0.2, 0.8]), np.array([1.0, 0, 0, 1]), groups=np.array([0, 0, 1, 1]))
        1.0
    """

    name = "ranking"
    short = "hr"
    drop_unit = "pt"

    def __init__(self, k: int = 10, *, user: str = "user", item: str = "item") -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError("task.k", k, "give the cut-off as an int >= 1, e.g. Ranking(k=10)")
        self.k, self.user, self.item = k, user, item
        self.metric = self.score_name = f"hr@{k}"
        self.group_by = user

    def check_inputs(self, inputs: Any) -> None:
        names = [s.name for s in inputs]
        for role, name in (("user", self.user), ("item", self.item)):
            spec = next((s for s in inputs if s.name == name), None)
            if spec is None:
                raise ConfigError("workload.input_spec", names, f"task 'ranking' needs a {role} id input named "
                                  f"{name!r} (InputSpec({name!r}, 'int64', ())), or Ranking({role}='your name')")
            if not spec.dtype.startswith(("int", "uint")):
                raise ConfigError("workload.input_spec", f"{name} {spec.dtype}",
                                  f"the {role} column holds integer ids: int64")

    def metrics(self, outputs: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> dict[str, float]:
        """HR@k and NDCG@k averaged over the positives of every group (one per user in NCF's protocol)."""
        s, y, g = outputs.reshape(-1).astype(np.float64), targets.reshape(-1), np.asarray(groups).reshape(-1)
        order = np.argsort(g, kind="stable")
        s, y, g = s[order], y[order], g[order]
        hits, gains = [], []
        for idx in np.split(np.arange(len(g)), np.flatnonzero(g[1:] != g[:-1]) + 1):
            neg = np.sort(s[idx][y[idx] == 0])
            for pos in s[idx][y[idx] == 1]:
                rank = len(neg) - np.searchsorted(neg, pos, side="left")  # negatives scoring >= the positive
                hits.append(rank < self.k)
                gains.append(1.0 / np.log2(rank + 2) if rank < self.k else 0.0)
        if not hits:
            raise ValueError("no positive target (1) in the split: nothing to rank")
        return {f"hr@{self.k}": float(np.mean(hits)), f"ndcg@{self.k}": float(np.mean(gains))}

    def score(self, outputs: np.ndarray, targets: np.ndarray, groups: np.ndarray | None = None) -> float:
        if groups is None:
            raise ValueError(f"task 'ranking' scores within groups: pass the {self.user!r} column as groups")
        return self.metrics(outputs, targets, groups)[f"hr@{self.k}"]

    def score_tolerance(self, score: float, n: int) -> float:
        return 0.0  # n counts rows, not users: the binomial error over rows would be too small

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "k": self.k, "user": self.user, "item": self.item}


class LanguageModel(Task):
    """A causal language model: (batch, tokens, vocabulary) next-token logits; targets (batch, tokens) token ids, the
    input shifted by one (`IGNORE`: no target at that position). Score: the negative mean next-token log-loss in nats
    over every target token of the split (stored, higher is better); shown as perplexity, exp(log-loss); a drop is
    perplexity above the base's. Each batch is reduced to (summed log-loss, tokens) per row by `summarize`, so no
    split's logits are ever held; at most `batch_limit` rows a call.

    Distillation: w * T^2 * KL(teacher || student) at temperature T over the teacher's top-`top_k` next tokens (both
    distributions renormalised over that set), at every target position, + (1 - w) * next-token cross-entropy (which
    also holds down the student's mass outside the set). The cached teacher keeps only those top-k (logits and ids,
    `compact_teacher`), once per training window; a vocabulary of at most 2k tokens is kept and compared whole.

    Example:
        >>> import numpy as np
        >>> lm = LanguageModel()
        >>> logits, ids = np.zeros((1, 3, 4), np.float32), np.array([[1, 2, IGNORE]])
        >>> score = lm.score(lm.summarize(logits, ids), ids)
        >>> round(score, 4), round(lm.display(score), 4)  # a uniform guess among 4: perplexity 4
        (-1.3863, 4.0)
    """

    name = "lm"
    metric = "perplexity"
    short = "ppl"
    score_name = "neg_log_loss"
    greater_is_better = False
    drop_unit = "ppl"
    batch_limit = 4
    head_refit = False
    top_k = 32

    def check_output(self, out: torch.Tensor) -> int:
        if not isinstance(out, torch.Tensor) or out.ndim != 3 or not out.is_floating_point():
            raise ConfigError("workload.model", getattr(out, "shape", type(out).__name__),
                              "must return (batch, tokens, vocabulary) next-token logits for task 'lm' (e.g. "
                              "AutoModelForCausalLM); a classifier's (batch, classes): task='classification'")
        return int(out.shape[-1])

    def check_targets(self, split: str, y: torch.Tensor, width: int) -> None:
        field = f"workload.{split} targets"
        if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 2:
            raise ConfigError(field, f"{str(y.dtype).removeprefix('torch.')} {tuple(y.shape)}",
                              "pass next-token ids as int64 (n, tokens): the input shifted by one, "
                              f"{IGNORE} where a position has no target")
        real = y[y != IGNORE]
        if not len(real):
            raise ConfigError(field, "no target token", "the split is shorter than one sequence: give more text")
        if int(real.min()) < 0 or int(real.max()) >= width:
            raise ConfigError(field, f"{int(real.min())}..{int(real.max())}",
                              f"the model's vocabulary has {width} tokens: ids must lie in 0..{width - 1}")

    def summarize(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(summed next-token log-loss in nats, target tokens) per row of the batch, as float64."""
        x = outputs.astype(np.float32, copy=False)
        keep = targets != IGNORE
        top = x.max(axis=-1, keepdims=True)
        lse = np.log(np.exp(x - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(x, np.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
        nll = np.where(keep, lse - picked, 0.0).astype(np.float64)
        return np.stack([nll.sum(axis=1), keep.sum(axis=1).astype(np.float64)], axis=1)

    def score(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        if outputs.ndim == 3:  # raw logits (a caller that did not summarize)
            outputs = self.summarize(outputs, targets)
        return -float(outputs[:, 0].sum() / max(outputs[:, 1].sum(), 1.0))

    def correct(self, outputs: np.ndarray, targets: np.ndarray) -> int | None:
        return None

    def display(self, score: float) -> float:
        return float(math.exp(min(-score, 700.0)))

    def drop(self, base_score: float, score: float) -> float:
        return self.display(score) - self.display(base_score)

    def score_tolerance(self, score: float, n: int) -> float:
        return 0.0

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)

    def compact_teacher(self, outputs: torch.Tensor) -> torch.Tensor:
        """The top-k logits and their ids, (..., 2k) float32 (ids are exact in float32 below 2^24); the logits
        themselves for a vocabulary of at most 2k tokens (`distill_loss` tells the two by their width)."""
        if outputs.shape[-1] <= 2 * self.top_k:
            return outputs
        values, ids = outputs.topk(self.top_k, dim=-1)
        return torch.cat([values, ids.to(values.dtype)], dim=-1)

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float, weight: float) -> torch.Tensor:
        keep = (targets != IGNORE).to(student.dtype)
        if teacher.shape[-1] == student.shape[-1]:  # whole distributions (a small vocabulary): exact KL
            t_logits, s_logits = teacher, student
        else:  # the teacher's top-k (`compact_teacher`): KL on that set, both renormalised over it
            k = teacher.shape[-1] // 2
            t_logits, s_logits = teacher[..., :k], torch.gather(student, -1, teacher[..., k:].long())
        log_p = F.log_softmax(t_logits / temperature, dim=-1)
        kl = (log_p.exp() * (log_p - F.log_softmax(s_logits / temperature, dim=-1))).sum(-1)
        kd = (kl * keep).sum() / keep.sum().clamp(min=1.0) * temperature**2
        return weight * kd + (1 - weight) * self.loss(student, targets)


class Classification(Task):
    """Classification: (batch, classes) logits, top-1 accuracy, drops in points, cross-entropy / KL distillation
    (the defaults of `Task`)."""


_TASKS: dict[str, Callable[[], Task]] = {"classification": Classification, "regression": Regression, "binary": Binary,
                                        "ranking": Ranking, "lm": LanguageModel}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Make `Workload(task=name)` build `factory()`."""
    _TASKS[name] = factory


def get_task(task: str | Task | None) -> Task:
    """A Task from a name (None: classification) or a Task itself."""
    if task is None:
        return _TASKS["classification"]()
    if isinstance(task, Task):
        return task
    if task not in _TASKS:
        raise ConfigError("workload.task", task, f"unknown task; {did_you_mean(str(task), _TASKS)}")
    return _TASKS[task]()


def stored_task(described: dict[str, Any] | None) -> Task:
    """The task a stored study names (`Task.describe()` on its base record; None: written before tasks existed,
    so classification). A task this process has not registered is shown from its description alone."""
    if not described:
        return get_task(None)
    if described.get("task") == "ranking" and isinstance(described.get("k"), int):
        return Ranking(k=described["k"], user=described.get("user", "user"), item=described.get("item", "item"))
    if described.get("task") in _TASKS:
        return get_task(described["task"])
    shown = Regression() if not described.get("greater_is_better", True) else Classification()
    for name in ("metric", "drop_unit"):
        if name in described:
            setattr(shown, name, described[name])
    shown.name = str(described.get("task"))
    return shown


def task_names() -> list[str]:
    return sorted(_TASKS)
