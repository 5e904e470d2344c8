"""Cache of trained base models: trained once, then loaded with `weights_only=True`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def cache_dir() -> Path:
    """`$LEPTON_SEARCH_CACHE`, else `~/.cache/lepton_search`."""
    root = os.environ.get("LEPTON_SEARCH_CACHE") or Path.home() / ".cache" / "lepton_search"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_model(key: str, model: nn.Module, train: Callable[[nn.Module], nn.Module], *, verbose: bool = True) -> nn.Module:
    """Load `model`'s weights from the cache entry `key`, or train it and store them."""
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
