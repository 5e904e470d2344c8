"""A user's regressor through the public API: `Workload(task="regression")`, its front and card in RMSE,
`recommend(max_metric_drop=...)`; and the bad inputs a task refuses in one line before any training."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from torch import nn

from lepton_search import SearchSpace, Workload, search
from lepton_search.errors import ConfigError
from lepton_search.results.report import front_table
from lepton_search.space import FinetuneSettings
from lepton_search.tasks import get_task
from lepton_search.training import fit


def _diabetes(n_train: int = 300) -> tuple[torch.Tensor, ...]:
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()  # standardised target: RMSE in standard deviations of disease progression
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _regressor(epochs: int = 60) -> Workload:
    """A 10 -> 64 -> 64 -> 1 MLP trained on 300 of the 442 diabetes patients; the other 142 validate it."""
    xt, yt, xv, yv = _diabetes()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    wl = Workload("diabetes-mlp", model, train=(xt, yt.unsqueeze(1)), val=(xv, yv.unsqueeze(1)),
                  example_input=xt[:1], task="regression", batch_size=32)
    fit(model, wl.loader("train", shuffle=True), lambda xb, yb: nn.functional.mse_loss(model(xb), yb),
        epochs=epochs, lr=0.01, weight_decay=1e-5, warmup=0.1, desc="diabetes")
    model.eval()
    return wl


@pytest.fixture(scope="module")
def regressor() -> Workload:
    torch.set_num_threads(1)
    return _regressor()


def test_rmse_is_stored_negated_and_shown_as_is():
    task = get_task("regression")
    outputs, targets = np.array([[0.0], [2.0]]), np.array([[1.0], [1.0]])
    assert task.score(outputs, targets) == -1.0 and task.display(-1.0) == 1.0
    assert task.drop(base_score=-0.5, score=-0.8) == pytest.approx(0.3)  # RMSE 0.3 worse than the base
    assert not task.greater_is_better and task.correct(outputs, targets) is None


def test_a_regressor_searches_with_its_front_and_card_in_rmse(regressor, sqlite_url, tmp_path):
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 2), trials=6, seed=0,
                        max_metric_drop=0.3,
                        finetune=FinetuneSettings(subset_size="all", batch_size=32, lr=0.005, bn_batches=4,
                                                  calibration_size=64))
    result = search(regressor, space, n_trials=6, storage=sqlite_url, study_name="diabetes", verbose=False,
                    artifacts=tmp_path / "art", callbacks=None, remeasure=False)
    base = result.base
    assert base.task["task"] == "regression" and base.task["metric"] == "rmse"
    assert result.study.metric_names == ["neg_rmse", "latency_ms"]  # the dashboard's axes say what is stored
    val_rmse = math.sqrt(float(((regressor.model(_diabetes()[2]).detach().squeeze(1) - _diabetes()[3]) ** 2).mean()))
    assert -base.accuracy == pytest.approx(val_rmse, rel=1e-3)  # the ONNX file's RMSE is the torch model's
    complete = result.trials().query("state == 'COMPLETE'")
    assert len(complete) == 6 and complete["accuracy_drop_pts"].isna().all()
    assert np.allclose(result.pareto()["rmse"], -result.pareto()["accuracy"])  # pareto() names the metric
    assert np.allclose(complete["metric_drop"], base.accuracy - complete["accuracy"])  # RMSE - base RMSE
    trained = complete["rejected"].isna()  # a config rejected before training is infeasible whatever its RMSE
    assert (complete["feasible"] == (trained & (complete["metric_drop"] <= 0.3))).all()  # in RMSE units
    table = front_table(result)
    assert table.startswith(f"base: rmse {-base.accuracy:.4f}") and "rmse_drop" in table and "accuracy" not in table

    loose = result.recommend(max_metric_drop=1.0)
    assert loose.metric == "rmse" and loose.metric_value == pytest.approx(-loose.accuracy)
    assert loose.label().split("-> ")[1].startswith(f"rmse {loose.metric_value:.4g}")
    tight = result.recommend(max_metric_drop=0.0)
    assert tight.metric_drop <= 1e-9 and tight.latency_ms >= loose.latency_ms  # tighter: never faster
    with pytest.raises(ConfigError, match="max_accuracy_drop_pts: got 1.0; task 'regression' has no accuracy"):
        result.recommend(max_accuracy_drop_pts=1.0)
    card = (result.export(loose.trial, tmp_path / "out").parent / "MODEL_CARD.md").read_text()
    assert "| validation rmse |" in card and "RMSE (task regression)" in card and " pt" not in card
    assert result.hypervolume(max_metric_drop=0.2) >= 0.0


@pytest.mark.parametrize("make, field, fix", [
    (lambda x, y: Workload("r", nn.Linear(4, 1), train=(x, y.long()), val=(x, y.long()), example_input=x[:1],
                           task="regression"),
     "workload.train targets", "a regression target is real-valued"),
    (lambda x, y: Workload("c", nn.Linear(4, 3), train=(x, y), val=(x, y), example_input=x[:1]),
     "workload.train labels", "real-valued targets: task='regression'"),
    (lambda x, y: Workload("n", nn.Linear(4, 1), train=(x, torch.where(y > 1, torch.nan, y)), val=(x, y),
                           example_input=x[:1], task="regression"),
     "workload.train targets", "drop or impute those samples"),
    (lambda x, y: Workload("w", nn.Linear(4, 2), train=(x, y), val=(x, y), example_input=x[:1], task="regression"),
     "workload.train targets", "the model gives 2 value(s) per sample"),
])
def test_targets_the_task_cannot_read_are_refused_in_one_line(make, field, fix):
    x, y = torch.randn(16, 4), torch.rand(16) * 2
    with pytest.raises(ConfigError, match=re.escape(fix)) as err:
        make(x, y).validate()
    assert err.value.field == field and "\n" not in str(err.value)


def test_an_unknown_task_is_refused_by_name():
    with pytest.raises(ConfigError, match="workload.task: got 'regresion'.*regression"):
        Workload("x", nn.Linear(4, 1), train=(torch.randn(4, 4), torch.randn(4)), val=(torch.randn(4, 4), torch.randn(4)),
                 example_input=torch.randn(1, 4), task="regresion")


def test_an_accuracy_limit_on_a_regressor_is_refused_before_training(regressor, sqlite_url, monkeypatch):
    from lepton_search.techniques import finetune

    monkeypatch.setattr(finetune, "distill", lambda *a, **k: pytest.fail("no training may run"))
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32,), finetune_epochs=(0, 1), max_accuracy_drop_pts=1.0)
    with pytest.raises(ConfigError, match=r"constraints.max_accuracy_drop_pts: got 1.0; task 'regression' has no "
                                          r"accuracy; limit its rmse with max_metric_drop"):
        search(regressor, space, n_trials=2, storage=sqlite_url, verbose=False)


def test_model_optimizer_names_the_regressors_metric(regressor, tmp_path):
    from lepton_search import ModelOptimizer

    _, _, table = ModelOptimizer(regressor.model, regressor, out_dir=tmp_path).quantize(8)
    assert list(table.columns[:3]) == ["config", "rmse", "test_rmse"] and (table["rmse"] > 0).all()
    xv, yv = _diabetes()[2:]
    expected = math.sqrt(float(((regressor.model(xv).detach().squeeze(1) - yv) ** 2).mean()))
    assert table.loc["before", "rmse"] == pytest.approx(expected, rel=1e-3)
