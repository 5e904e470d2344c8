"""Cache of trained base models: trained once, then loaded with `weights_only=True`.

The default demo's base (`fashion-mnist-cnn`, 3 epochs) also ships with the package (`weights/`, 2.6 MB, listed
with its SHA-256 and accuracies in `weights/manifest.json`): a fresh clone's demo starts from it instead of
spending ~7 of its minutes training it. `experiments/demo_base.py` retrains it and compares;
`LEPTON_SEARCH_TRAIN_BASE=1` trains instead of loading shipped weights.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn

from lepton_search.logging import logger, verbosity
from lepton_search.paths import file_sha256

SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
TRAIN_BASE_ENV = "LEPTON_SEARCH_TRAIN_BASE"  # "1": ignore shipped weights (train, or read the cache)

# Set by `provided_weights`: a worker joining a study uses the study's base model, never trains one.
_PROVIDED: ContextVar[dict | None] = ContextVar("lepton_search_base_state", default=None)


@contextmanager
def provided_weights(state_dict: dict) -> Iterator[None]:
    """Within this block, `cached_model` loads `state_dict` instead of reading the cache or training."""
    token = _PROVIDED.set(state_dict)
    try:
        yield
    finally:
        _PROVIDED.reset(token)


def cache_dir() -> Path:
    """`$LEPTON_SEARCH_CACHE`, else `~/.cache/lepton_search`."""
    root = os.environ.get("LEPTON_SEARCH_CACHE") or Path.home() / ".cache" / "lepton_search"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shipped_manifest() -> dict[str, dict]:
    """Shipped base weights: cache key -> {sha256, val_accuracy, test_accuracy, host, torch, command}."""
    path = SHIPPED_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_weights(key: str) -> Path | None:
    """The shipped weights file for cache entry `key` when it exists and matches its recorded SHA-256."""
    if os.environ.get(TRAIN_BASE_ENV, "") not in ("", "0"):
        return None
    entry, path = shipped_manifest().get(key), SHIPPED_DIR / f"{key}.pt"
    if entry is None or not path.is_file():
        return None
    if file_sha256(path) != entry.get("sha256"):
        logger.warning("base model: shipped %s does not match its SHA-256 in manifest.json; training instead",
                       path.name)
        return None
    return path


def cached_model(key: str, model: nn.Module, train: Callable[[nn.Module], nn.Module], *, verbose: bool = True) -> nn.Module:
    """Load `model`'s weights from the cache entry `key`, else from the shipped weights of that key, else train
    it and store them in the cache."""
    provided = _PROVIDED.get()
    if provided is not None:
        model.load_state_dict(provided)
        logger.info("base model: weights from the study's base artifact (not trained here)")
        return model.eval()
    with verbosity(verbose):
        return _cached_model(key, model, train)


def _cached_model(key: str, model: nn.Module, train: Callable[[nn.Module], nn.Module]) -> nn.Module:
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        logger.info("base model: loaded from cache %s", path)
        return model.eval()
    shipped = shipped_weights(key)
    if shipped is not None:
        model.load_state_dict(torch.load(shipped, map_location="cpu", weights_only=True))
        logger.info("base model: shipped weights %s (not trained here; %s=1 trains it)", shipped.name, TRAIN_BASE_ENV)
        return model.eval()
    logger.info("base model: training once, will cache at %s", path)
    start = time.perf_counter()
    model = train(model)
    logger.info("base model: trained in %.0f s", time.perf_counter() - start)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return model.eval()
