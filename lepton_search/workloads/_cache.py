"""Cache of trained base models: trained once, then loaded with `weights_only=True`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import nn

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


def cached_model(key: str, model: nn.Module, train: Callable[[nn.Module], nn.Module], *, verbose: bool = True) -> nn.Module:
    """Load `model`'s weights from the cache entry `key`, or train it and store them."""
    provided = _PROVIDED.get()
    if provided is not None:
        model.load_state_dict(provided)
        print("base model: weights from the study's base artifact (not trained here)", file=sys.stderr)
        return model.eval()
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if verbose:
            print(f"base model: loaded from cache {path}", file=sys.stderr)
        return model.eval()
    if verbose:
        print(f"base model: training once, will cache at {path}", file=sys.stderr)
    model = train(model)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return model.eval()
