"""`fashion-vit`: registered by name, a tiny real version trained and cached, refused without transformers."""

from __future__ import annotations

import sys

import pytest
import torch

from lepton_search import workloads
from lepton_search.errors import ConfigError
from lepton_search.techniques import prune_transformer

TINY = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "patch": 7, "base_epochs": 1, "limit": 256}


def test_registered_by_name():
    assert "fashion-vit" in workloads.list_workloads("fashion-*")


def test_tiny_version_trains_once_then_loads_and_is_a_vit_workload(caplog):
    torch.set_num_threads(1)
    with caplog.at_level("INFO", logger="lepton_search"):
        wl = workloads.get("fashion-vit", **TINY)
        again = workloads.get("fashion-vit", **TINY)
    assert "training once" in caplog.text and "loaded from cache" in caplog.text
    wl.validate()
    assert [(s.name, s.dtype, s.shape) for s in wl.inputs] == [("pixel_values", "float32", (1, 28, 28))]
    assert wl.seq_len is None and wl.info["tokens"] == 17 and wl.info["family"] == "transformer"
    assert wl.info["train"] == wl.info["val"] == wl.info["test"] == 256
    assert len(prune_transformer.encoder_layers(wl.model)) == 2
    x = wl.dataset("val").tensors[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(wl.model(x), again.model(x))  # the cached weights are the trained ones
        assert wl.model(x).shape == (8, 10)


def test_without_transformers_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ConfigError, match=r"workload: got 'fashion-vit'; needs transformers: pip install 'lepton-search\[nlp\]'"):
        workloads.get("fashion-vit", **TINY)
