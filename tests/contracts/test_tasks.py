"""The contract every registered `Task` passes (after optuna's `testing/pytest_samplers.py`: one suite, every
implementation). A task registered without a `CASES` entry fails `test_every_registered_task_has_a_case`.

Each case is a small batch of model outputs and targets: a perfect prediction, a bad one, and targets the task
must refuse. The suite checks what the search relies on whatever the task: the stored score is higher-is-better,
a drop is positive when worse, the losses are finite and move the student, bad targets are one ConfigError, and
a task written down with a study (`describe()`) comes back showing and comparing scores the same way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from lepton_search.errors import ConfigError
from lepton_search.tasks import Ranking, Task, get_task, stored_task, task_names


@dataclasses.dataclass(frozen=True)
class Case:
    """Outputs and targets for one task. `best`: the stored score of a perfect prediction."""

    targets: np.ndarray
    perfect: np.ndarray  # model outputs that get every sample right
    bad: np.ndarray  # outputs that get (about) every sample wrong
    best: float
    bad_targets: dict[str, torch.Tensor]  # why -> targets check_targets must refuse for these outputs
    groups: np.ndarray | None = None  # the group_by column, for a task that scores within groups

    def score(self, task: Task, outputs: np.ndarray) -> float:
        kwargs: dict[str, Any] = {"groups": self.groups} if task.group_by else {}
        return task.score(outputs, self.targets, **kwargs)


def _classification() -> Case:
    y = np.array([0, 1, 2, 1, 0, 2])
    onehot = np.eye(3, dtype=np.float32)[y] * 4.0
    return Case(y, onehot, np.roll(onehot, 1, axis=1), 1.0, {
        "bool labels": torch.tensor([True, False, True, False, True, False]),
        "float labels": torch.tensor(y, dtype=torch.float32),
        "2-D labels": torch.tensor(np.eye(3, dtype=np.int64)[y]),
        "a class above the outputs": torch.tensor([0, 1, 3, 1, 0, 2]),
        "a negative class": torch.tensor([0, -1, 2, 1, 0, 2])})


def _regression() -> Case:
    y = np.array([0.5, -1.0, 2.0, 3.5, 0.0, 1.0], dtype=np.float32)
    return Case(y, y.reshape(-1, 1).copy(), y.reshape(-1, 1) + 2.0, 0.0, {
        "integer targets": torch.tensor([0, 1, 2, 3, 0, 1]),
        "a NaN": torch.tensor([0.5, float("nan"), 2.0, 3.5, 0.0, 1.0]),
        "two values a sample for one output": torch.zeros(6, 2)})


def _binary() -> Case:
    y = np.array([1, 0, 1, 0, 0, 1], dtype=np.float32)
    logits = (y * 2 - 1).reshape(-1, 1) * 3.0
    return Case(y, logits, -logits, 1.0, {
        "integer targets": torch.tensor([1, 0, 1, 0, 0, 1]),
        "a NaN": torch.tensor([1.0, float("nan"), 1.0, 0.0, 0.0, 1.0]),
        "two targets a sample": torch.zeros(6, 2),
        "a target that is not 0 or 1": torch.tensor([1.0, 0.5, 1.0, 0.0, 0.0, 1.0])})


def _ranking() -> Case:
    # two users, each one held-out item among 11 negatives: more than k, so ranking the positive last misses
    groups = np.repeat([0, 1], 12)
    y = np.tile(np.r_[1.0, np.zeros(11)], 2).astype(np.float32)
    scores = np.tile(np.linspace(0.0, 1.0, 12), 2).astype(np.float32)
    perfect = np.where(y == 1, 2.0, scores).astype(np.float32)
    bad = np.where(y == 1, -1.0, scores).astype(np.float32)
    return Case(y, perfect, bad, 1.0, {**_binary().bad_targets,
                                       "a target that is not 0 or 1": torch.full((24,), 2.0)}, groups)


def _lm() -> Case:
    # two windows of four positions, a vocabulary of 5, the last position of the second without a next token
    y = np.array([[1, 2, 3, 4], [0, 4, 2, -100]])
    onehot = np.eye(5, dtype=np.float32)[np.where(y < 0, 0, y)] * 40.0
    return Case(y, onehot, np.roll(onehot, 1, axis=-1), 0.0, {
        "float targets": torch.tensor(y, dtype=torch.float32),
        "1-D targets": torch.tensor([1, 2, 3, 4]),
        "an id above the vocabulary": torch.tensor([[1, 2, 3, 5]]),
        "no target at all": torch.full((2, 4), -100)})


CASES = {"classification": _classification, "regression": _regression, "binary": _binary, "ranking": _ranking,
         "lm": _lm}
# a task built otherwise than get_task(name): a ranking cut-off other than the default, which a study must keep
BUILT = {"ranking": lambda: Ranking(k=5, user="uid")}


def test_every_registered_task_has_a_case():
    assert sorted(CASES) == task_names()


@pytest.fixture(params=sorted(CASES))
def task_case(request) -> tuple[Task, Case]:
    task = BUILT.get(request.param, lambda: get_task(request.param))()
    assert task.name == request.param
    return task, CASES[request.param]()


def test_the_stored_score_is_higher_for_a_perfect_prediction(task_case):
    task, case = task_case
    perfect, bad = case.score(task, case.perfect), case.score(task, case.bad)
    assert perfect == pytest.approx(case.best) and bad < perfect
    assert (task.display(perfect) > task.display(bad)) == task.greater_is_better  # the metric as shown


def test_a_constant_prediction_is_not_a_perfect_one(task_case):
    """A model that ignores its input learns nothing: ties (a ranking's negatives scoring as the positive) do
    not count for it."""
    task, case = task_case
    assert case.score(task, np.zeros_like(case.perfect)) < case.score(task, case.perfect)


def test_a_drop_is_positive_when_worse_and_zero_when_the_same(task_case):
    task, case = task_case
    perfect, bad = case.score(task, case.perfect), case.score(task, case.bad)
    assert task.drop(base_score=perfect, score=bad) > 0 > task.drop(base_score=bad, score=perfect)
    assert task.drop(base_score=bad, score=bad) == 0
    assert task.score_tolerance(perfect, len(case.targets)) >= 0


def _torch(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    student = torch.tensor(case.bad, requires_grad=True)
    targets = torch.tensor(case.targets)
    return student, torch.tensor(case.perfect), targets


def test_the_losses_are_finite_and_move_the_student(task_case):
    task, case = task_case
    for name, loss_of in (("loss", lambda s, t, y: task.loss(s, y)),
                          ("distill_loss", lambda s, t, y: task.distill_loss(s, t, y, temperature=2.0, weight=0.5))):
        student, teacher, targets = _torch(case)
        loss = loss_of(student, teacher, targets)
        assert loss.ndim == 0 and math.isfinite(loss.item()) and loss.item() > 0, name
        loss.backward()
        assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0, name


def test_distillation_ends_at_the_plain_loss_and_at_the_teacher(task_case):
    """weight 0: the supervised loss alone; weight 1 with the student at the teacher's outputs: nothing to learn."""
    task, case = task_case
    student, teacher, targets = _torch(case)
    assert task.distill_loss(student, teacher, targets, temperature=2.0, weight=0.0).item() == pytest.approx(
        task.loss(student, targets).item())
    assert task.distill_loss(teacher, teacher, targets, temperature=2.0, weight=1.0).item() == pytest.approx(
        0.0, abs=1e-6)


def test_targets_that_fit_pass_and_bad_ones_are_one_config_error(task_case):
    task, case = task_case
    width = task.check_output(torch.tensor(case.perfect))
    task.check_targets("train", torch.tensor(case.targets), width)
    for why, y in case.bad_targets.items():
        with pytest.raises(ConfigError) as err:
            task.check_targets("train", y, width)
        assert err.value.field.startswith("workload.train "), why  # names the split it read
        assert "\n" not in str(err.value), why
    with pytest.raises(ConfigError):
        task.check_output(("not", "a tensor"))


def test_a_stored_task_shows_and_compares_scores_as_the_task_does(task_case):
    task, case = task_case
    back = stored_task(task.describe())
    assert type(back) is type(task) and back.describe() == task.describe()
    for score in (case.score(task, case.perfect), case.score(task, case.bad)):
        assert back.display(score) == task.display(score)
        assert back.drop(base_score=case.best, score=score) == task.drop(base_score=case.best, score=score)
    assert (back.metric, back.score_name, back.drop_unit, back.group_by) == (
        task.metric, task.score_name, task.drop_unit, task.group_by)
