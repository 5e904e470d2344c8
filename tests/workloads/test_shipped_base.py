"""The default demo's base ships with the package: it matches its manifest, loads without training, scores as
recorded; a file that does not match its SHA-256, or LEPTON_SEARCH_TRAIN_BASE=1, trains instead."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from lepton_search.evaluate import onnx_accuracy
from lepton_search.paths import file_sha256
from lepton_search.techniques import export
from lepton_search.workloads import _cache, fashion_mnist
from lepton_search.workloads.fashion_mnist import FashionCNN

KEY = "fashion-cnn-w48-e3-v5000-s0"


def test_shipped_file_matches_its_manifest_and_the_architecture():
    entry = _cache.shipped_manifest()[KEY]
    path = _cache.SHIPPED_DIR / f"{KEY}.pt"
    assert file_sha256(path) == entry["sha256"]
    FashionCNN(48).load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # strict: same layers
    assert entry["command"].startswith("python experiments/demo_base.py") and 0.9 < entry["val_accuracy"] < 1


@pytest.mark.slow
def test_default_workload_loads_shipped_weights_and_scores_as_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_SEARCH_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(_cache.TRAIN_BASE_ENV, raising=False)
    monkeypatch.setattr(fashion_mnist, "train_classifier", lambda *a, **k: pytest.fail("shipped weights: no training"))
    wl = fashion_mnist.fashion_mnist_cnn(verbose=False)
    path = tmp_path / "base.onnx"
    export.to_onnx(wl.model, wl.example_input, path)
    # The manifest's figure came from the same file on another run; a host with other kernels may flip an image
    assert onnx_accuracy(path, wl, "val").accuracy == pytest.approx(_cache.shipped_manifest()[KEY]["val_accuracy"],
                                                                    abs=0.001)
    assert not list((tmp_path / "empty-cache").glob("*.pt"))  # nothing trained, nothing cached


def _fake_shipped(tmp_path, monkeypatch, *, sha: str | None = None) -> nn.Module:
    model = nn.Linear(2, 2)
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "k.pt")
    entry = {"sha256": sha or file_sha256(tmp_path / "k.pt")}
    (tmp_path / "manifest.json").write_text(json.dumps({"k": entry}))
    monkeypatch.setattr(_cache, "SHIPPED_DIR", tmp_path)
    monkeypatch.setenv("LEPTON_SEARCH_CACHE", str(tmp_path / "cache"))
    return model


def _train_marks(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.weight.fill_(7.0)
    return model


def test_shipped_weights_are_loaded_when_they_match(tmp_path, monkeypatch):
    monkeypatch.delenv(_cache.TRAIN_BASE_ENV, raising=False)
    model = _cache.cached_model("k", _fake_shipped(tmp_path, monkeypatch), _train_marks, verbose=False)
    assert torch.equal(model.weight, torch.load(tmp_path / "k.pt", weights_only=True)["weight"])


def test_a_shipped_file_that_does_not_match_its_sha256_is_retrained(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(_cache.TRAIN_BASE_ENV, raising=False)
    model = _cache.cached_model("k", _fake_shipped(tmp_path, monkeypatch, sha="0" * 64), _train_marks)
    assert torch.all(model.weight == 7.0)
    assert any("does not match its SHA-256" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert (tmp_path / "cache" / "k.pt").is_file()  # the trained weights are cached, the shipped file untouched


def test_train_base_env_ignores_shipped_weights(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.TRAIN_BASE_ENV, "1")
    model = _cache.cached_model("k", _fake_shipped(tmp_path, monkeypatch), _train_marks, verbose=False)
    assert torch.all(model.weight == 7.0)
