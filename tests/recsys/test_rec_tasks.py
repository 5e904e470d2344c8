"""The recommender tasks: `ranking` (HR@k / NDCG@k per user, NCF's protocol) and `binary` (AUC, log-loss), checked
against independent references; and the bad inputs a recommender workload refuses in one line before training."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from rec_workload import CANDIDATES, INPUTS, TinyRec, interactions
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score
from torch import nn

from lepton_search import SearchSpace, Workload, search
from lepton_search.errors import ConfigError
from lepton_search.tasks import Ranking, get_task, stored_task


def _reference(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k by sorting each user's list (ties broken against the positive), NDCG by scikit-learn."""
    hits, gains = [], []
    for g in np.unique(groups):
        s, y = scores[groups == g], labels[groups == g]
        order = sorted(range(len(s)), key=lambda i: (-s[i], y[i]))
        rank = [y[i] for i in order].index(1.0)
        hits.append(rank < k)
        gains.append(ndcg_score(y[None, order], (len(s) - np.arange(len(s)))[None].astype(float), k=k))
    return float(np.mean(hits)), float(np.mean(gains))


def test_hr_and_ndcg_match_a_reference_on_random_lists():
    rng = np.random.default_rng(0)
    users, n = 50, 100
    groups = np.repeat(rng.permutation(1000)[:users], n)  # ids need not be contiguous or sorted
    labels = np.zeros(users * n)
    labels[np.arange(users) * n + rng.integers(0, n, users)] = 1.0
    scores = np.round(rng.standard_normal(users * n), 1)  # rounded: ties happen
    perm = rng.permutation(len(scores))  # rows in any order
    task = Ranking(k=10)
    got = task.metrics(scores[perm], labels[perm], groups[perm])
    hr, ndcg = _reference(scores, labels, groups, 10)
    assert got["hr@10"] == pytest.approx(hr) and got["ndcg@10"] == pytest.approx(ndcg)
    assert task.score(scores, labels, groups) == got["hr@10"]
    assert 0.0 < hr < 1.0  # neither trivial


def test_a_constant_model_ranks_nothing_and_a_perfect_one_everything():
    groups, labels = np.repeat(np.arange(3), 4), np.tile([1.0, 0, 0, 0], 3)
    task = Ranking(k=1)
    assert task.score(np.zeros(12), labels, groups) == 0.0  # ties count against the positive
    assert task.score(labels * 5, labels, groups) == 1.0
    assert task.drop(base_score=0.70, score=0.69) == pytest.approx(1.0)  # 1 pt = 0.01 of HR
    assert stored_task(Ranking(k=5).describe()).metric == "hr@5"


def test_binary_auc_and_log_loss_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(np.float32)
    z = (y * 1.5 + rng.standard_normal(500)).astype(np.float32)
    task = get_task("binary")
    assert task.score(z, y) == pytest.approx(roc_auc_score(y, z))
    assert task.log_loss(z, y) == pytest.approx(log_loss(y, 1 / (1 + np.exp(-z))), rel=1e-5)
    student, teacher = torch.zeros(4, requires_grad=True), torch.tensor([1.0, -1.0, 2.0, 0.0])
    loss = task.distill_loss(student, teacher, torch.ones(4), temperature=4.0, weight=1.0)
    assert loss.item() == pytest.approx(float((teacher**2).mean()))  # MSE to the teacher's logits


def _workload(task: str = "ranking", **changes) -> Workload:
    data = interactions()
    kwargs = {"train": data["train"], "val": data["val"], "test": data["test"], "input_spec": INPUTS, "task": task,
                  "example_input": (data["val"][0][:CANDIDATES], data["val"][1][:CANDIDATES])}
    kwargs.update(changes)
    return Workload("tiny-rec", changes.pop("model", TinyRec()), **{k: v for k, v in kwargs.items() if k != "model"})


def _with(split: str, column: int, value) -> tuple[torch.Tensor, ...]:
    parts = list(interactions()[split])
    parts[column] = value(parts[column].clone())
    return tuple(parts)


def _set_first(x: torch.Tensor, v) -> torch.Tensor:
    x[0] = v
    return x


@pytest.mark.parametrize("changes, message", [
    ({"val": _with("val", 2, lambda y: y.long())},  # class ids for a ranking task
     "workload.val targets: got 'int64'; task 'ranking' reads a 0/1 relevance per row as floats"),
    ({"train": _with("train", 2, lambda y: _set_first(y, float("nan")))},
     "workload.train targets: got '1 non-finite values (NaN/inf)'; drop or impute those samples first"),
    ({"test": _with("test", 1, lambda i: _set_first(i, 500))},  # item id beyond the 120-row tables
     "workload.test inputs: got 'item id 500'; embedding 'item_gmf' has 120 rows (ids 0..119)"),
    ({"train": _with("train", 0, lambda u: _set_first(u, -1))},
     "workload.train inputs: got 'user id -1'; embedding 'user_gmf' has 40 rows"),
    ({"input_spec": (INPUTS[0], INPUTS[1].__class__("movie", "int64", ()))},  # no item column
     "workload.input_spec: got ['user', 'movie']; task 'ranking' needs a item id input named 'item'"),
])
def test_bad_recommender_data_is_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        _workload(**changes).validate()
    assert "\n" not in str(err.value)


def test_a_ranking_workload_without_a_user_column_is_refused():
    x = torch.randint(0, 120, (40,))
    model = nn.Sequential(nn.Embedding(120, 8), nn.Linear(8, 1), nn.Flatten(0))
    wl = Workload("items-only", model, train=(x, torch.ones(40)), val=(x, torch.ones(40)), example_input=x[:2],
                  task="ranking")
    with pytest.raises(ConfigError, match=r"workload.input_spec: got \['input'\]; task 'ranking' needs a user id "
                                          r"input named 'user'"):
        wl.validate()


def test_embedding_knobs_on_a_model_without_embeddings_are_refused_before_training(sqlite_url, tmp_path, monkeypatch):
    from lepton_search.techniques import finetune

    x, y = torch.randn(64, 8), torch.rand(64).round()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))
    wl = Workload("clicks-mlp", model, train=(x, y), val=(x, y), example_input=x[:1], task="binary")
    db = tmp_path / "study.db"
    search(wl, SearchSpace(bits=(32,), finetune_epochs=(0, 0), prune_ratio=(0.0, 0.0, 0.25)), n_trials=1,
           storage=f"sqlite:///{db}", study_name="kept", verbose=False, remeasure=False)
    before = db.read_bytes()
    monkeypatch.setattr(finetune, "distill", lambda *a, **k: pytest.fail("no training may run"))
    space = SearchSpace(bits=(32,), finetune_epochs=(0, 1), prune_ratio=(0.0, 0.0, 0.25), embedding_bits=(32, 4))
    with pytest.raises(ConfigError, match=r"^embedding_bits: got 4; this model has no nn.Embedding for it to act "
                                          r"on; remove embedding_bits \(or set it to 32\)$"):
        search(wl, space, n_trials=2, storage=f"sqlite:///{db}", study_name="kept", verbose=False)
    assert db.read_bytes() == before  # nothing stored is touched
    from lepton_search import ModelOptimizer

    with pytest.raises(ConfigError, match="embedding_dim: got 0.5; this model has no nn.Embedding"):
        ModelOptimizer(model, wl, out_dir=tmp_path).compress(bits=32, finetune_epochs=0, embedding_dim=0.5)


def test_embedding_knob_values_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"embedding_bits: got 2; unsupported embedding table width"):
        SearchSpace(embedding_bits=(32, 2))
    with pytest.raises(ConfigError, match=r"embedding_dim: got \[0.0, 1.0\]; share of each embedding table"):
        SearchSpace(embedding_dim=(0.0, 1.0, 0.25))
    assert math.isclose(SearchSpace(embedding_dim=(0.5, 1.0, 0.25)).embedding_dim[0], 0.5)
