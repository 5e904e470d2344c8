"""lepton_search: find the best way to compress a PyTorch model for a target machine.

SearchSpace --suggest--> CompressionConfig --compress--> Candidate --evaluate--> Measurement
--> Optuna trial --> SearchResult (Pareto front, plots, export).

Every name the README and docs/ use is importable from here and listed in `__all__`. Names are imported
lazily so that light entry points (`lepton-search measure` on a device with only onnxruntime and numpy, the
latency predictor) never import torch.

Example:
    >>> import lepton_search as ls
    >>> ls.InputSpec.__name__
    'InputSpec'
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it (imported on first use)
_EXPORTS = {
    # front doors
    "search": "lepton_search.api", "load": "lepton_search.api",
    "ModelOptimizer": "lepton_search.optimizer",
    "SearchResult": "lepton_search.results", "RecheckError": "lepton_search.results.release",
    # what is searched
    "SearchSpace": "lepton_search.space", "CompressionConfig": "lepton_search.space",
    "FinetuneSettings": "lepton_search.space", "LatencySettings": "lepton_search.space",
    "default_space": "lepton_search.space", "transformer_space": "lepton_search.default_spaces",
    # what it is searched on
    "Workload": "lepton_search.workloads", "InputSpec": "lepton_search.workloads",
    "list_workloads": "lepton_search.workloads", "migrate": "lepton_search.workloads.transfer",
    "Task": "lepton_search.tasks", "Regression": "lepton_search.tasks",
    "get_task": "lepton_search.tasks", "register_task": "lepton_search.tasks",
    # the pipeline's stages
    "Candidate": "lepton_search.candidate", "InputTransform": "lepton_search.candidate",
    "compress": "lepton_search.candidate",
    "Measurement": "lepton_search.evaluate", "evaluate": "lepton_search.evaluate",
    # latency targets
    "LatencyEstimate": "lepton_search.latency", "LatencyModel": "lepton_search.latency",
    "get_target": "lepton_search.latency", "list_targets": "lepton_search.latency",
    "register_target": "lepton_search.latency",
    # errors
    "ConfigError": "lepton_search.errors", "LeptonError": "lepton_search.errors",
}
_SUBMODULES = ("tasks", "workloads")  # `ls.workloads.get(name)`, `ls.tasks.Task` as the README writes them
__all__ = sorted([*_EXPORTS, *_SUBMODULES])  # noqa: PLE0605 - built from the lazy table
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"lepton_search.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lepton_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
