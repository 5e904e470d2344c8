"""`bbc-minilm`: registered by name, a one-line error naming the extra without it, a tiny real version."""

from __future__ import annotations

import sys

import pytest
import torch

from lepton_search import workloads
from lepton_search.errors import ConfigError


def test_registered_by_name():
    assert "bbc-minilm" in workloads.list_workloads("bbc-*")


def test_without_transformers_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("LEPTON_SEARCH_CACHE", str(tmp_path))  # nothing tokenized yet: the tokenizer is needed
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lepton-search\[nlp\]'"):
        workloads.get("bbc-minilm")


@pytest.mark.slow  # tokenizes BBC News once (~10 s) and fine-tunes a 2-layer slice for one epoch (~10 s)
def test_tiny_version_is_a_valid_two_input_workload():
    pytest.importorskip("transformers")
    torch.set_num_threads(1)
    wl = workloads.get("bbc-minilm", num_layers=2, seq_len=16, limit=200, base_epochs=1, lr=0.02, verbose=False)
    wl.validate()
    assert [(s.name, s.dtype, s.shape) for s in wl.inputs] == [("input_ids", "int64", (16,)),
                                                                ("attention_mask", "int64", (16,))]
    assert wl.seq_len == 16
    assert wl.info["layers"] == 2 and wl.info["train"] == wl.info["val"] == wl.info["test"] == 200
    feeds = wl.sample_inputs(4)
    assert sorted(feeds) == ["attention_mask", "input_ids"] and feeds["input_ids"].shape == (4, 16)
