"""A small NeuMF-shaped recommender on synthetic interactions (shared by the recommender tests): trains in a
second, ranks far above chance, and has every part the embedding knobs act on (GMF product, MLP concat)."""

from __future__ import annotations

import torch
from torch import nn

from lepton_search import InputSpec, Workload

USERS, ITEMS, CANDIDATES = 40, 120, 20
INPUTS = (InputSpec("user", "int64", ()), InputSpec("item", "int64", ()))


class TinyRec(nn.Module):
    def __init__(self, users: int = USERS, items: int = ITEMS, dim: int = 16) -> None:
        super().__init__()
        self.user_gmf, self.item_gmf = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.user_mlp, self.item_mlp = nn.Embedding(users, dim), nn.Embedding(items, dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.predict = nn.Linear(dim + 32, 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(user) * self.item_gmf(item)
        mlp = self.mlp(torch.cat([self.user_mlp(user), self.item_mlp(item)], dim=-1))
        return self.predict(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)


def interactions(seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Users like items of their own cluster (4 clusters). Train: pointwise 0/1 rows; val/test: per user one liked
    item and CANDIDATES - 1 others, grouped by user."""
    g = torch.Generator().manual_seed(seed)
    cu, ci = torch.arange(USERS) % 4, torch.arange(ITEMS) % 4
    users = torch.randint(0, USERS, (6000,), generator=g)
    items = torch.randint(0, ITEMS, (6000,), generator=g)
    out = {"train": (users, items, (cu[users] == ci[items]).float())}
    for split in ("val", "test"):
        u, i, y = [], [], []
        for user in range(USERS):
            liked = torch.nonzero(ci == cu[user]).flatten()
            other = torch.nonzero(ci != cu[user]).flatten()
            pos = liked[torch.randint(0, len(liked), (1,), generator=g)]
            neg = other[torch.randperm(len(other), generator=g)[:CANDIDATES - 1]]
            u += [user] * CANDIDATES
            i += [int(pos)] + neg.tolist()
            y += [1.0] + [0.0] * (CANDIDATES - 1)
        out[split] = (torch.tensor(u), torch.tensor(i), torch.tensor(y))
    return out


def trained_workload(task: str = "ranking", seed: int = 0, steps: int = 300) -> Workload:
    torch.manual_seed(seed)
    data = interactions(seed)
    model = TinyRec()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    u, i, y = data["train"]
    for step in range(steps):
        idx = torch.arange(step * 256, step * 256 + 256) % len(u)
        loss = nn.functional.binary_cross_entropy_with_logits(model(u[idx], i[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return Workload("tiny-rec", model, train=data["train"], val=data["val"], test=data["test"],
                    example_input=(data["val"][0][:CANDIDATES], data["val"][1][:CANDIDATES]), input_spec=INPUTS,
                    task=task, sample_count=CANDIDATES)
