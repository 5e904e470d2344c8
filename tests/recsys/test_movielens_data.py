"""MovieLens-100k as the recommender workloads read it (from the recbole wheel): NCF's leave-one-out protocol."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_search.space import SearchSpace
from lepton_search.workloads.movielens import REQUEST_ITEMS, load_ratings, ncf_splits, rating_splits


def test_leave_one_out_holds_out_each_users_latest_items_among_99_unseen_ones():
    ratings = load_ratings()
    splits, users, items = ncf_splits(seed=0)
    assert (users, items, len(ratings)) == (943, 1682, 100_000)
    seen: dict[int, set[int]] = {}
    for u, i, *_ in ratings.tolist():
        seen.setdefault(u, set()).add(i)
    last = {}
    for u, i, _, t in ratings[np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))].tolist():
        last.setdefault(u, []).append(i)
    for split, back in (("test", -1), ("val", -2)):
        u, i, y = (t.numpy() for t in splits[split])
        assert len(u) == users * REQUEST_ITEMS and y.sum() == users  # one held-out item per user
        for user in (0, 500, 942):
            rows = u == user
            assert rows.sum() == REQUEST_ITEMS and i[rows & (y == 1)].tolist() == [last[user][back]]
            assert not set(i[rows & (y == 0)].tolist()) & seen[user]  # negatives: never rated by the user
            assert len(set(i[rows].tolist())) == REQUEST_ITEMS
    tu, ti, ty = (t.numpy() for t in splits["train"])
    assert ty.sum() == len(ratings) - 2 * users and len(ty) == 5 * ty.sum()  # 4 negatives per positive
    held = {(int(a), int(b)) for a, b, c in zip(*(t.numpy() for t in splits["test"])) if c == 1}
    assert not held & set(zip(tu[ty == 1].tolist(), ti[ty == 1].tolist()))
    again, _, _ = ncf_splits(seed=0)
    assert all((a == b).all() for a, b in zip(again["val"], splits["val"]))  # seeded


def test_rating_split_is_80_10_10_of_the_ratings():
    splits, _, _ = rating_splits(seed=0)
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [80_000, 10_000, 10_000]
    assert float(splits["train"][2].min()) == 1.0 and float(splits["train"][2].max()) == 5.0


def test_the_recommender_space_anchors_quantization_alone():
    space = SearchSpace.from_yaml("search_spaces/recommender.yaml")
    assert space.latency.batch_size == REQUEST_ITEMS and "size_mb" in space.objectives
    assert [(c.bits, c.embedding_bits) for c in space.anchor_configs()] == [(8, 8), (8, 4)]
    assert [c.bits for c in SearchSpace(bits=(32, 8)).anchor_configs()] == [8]  # tables at 32: as before


@pytest.mark.slow
def test_movielens_workloads_build_and_validate():
    from lepton_search import workloads

    for name in ("movielens-ncf", "movielens-rating"):
        wl = workloads.get(name)
        wl.validate()
        assert wl.seq_len is None and {k: len(v) for k, v in wl.sample_inputs().items()} == {"user": 100, "item": 100}
