"""lepton_search: find the best way to compress a PyTorch model for a target machine.

SearchSpace --suggest--> CompressionConfig --compress--> Candidate --evaluate--> Measurement
--> Optuna trial --> SearchResult (Pareto front, plots, export).

Names are imported lazily so that light entry points (`lepton-search measure` on a device with only
onnxruntime and numpy, the latency predictor) never import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "lepton_search.candidate", "compress": "lepton_search.candidate",
    "ConfigError": "lepton_search.errors", "LeptonError": "lepton_search.errors",
    "Measurement": "lepton_search.evaluate", "evaluate": "lepton_search.evaluate",
    "LatencyEstimate": "lepton_search.latency", "LatencyModel": "lepton_search.latency",
    "get_target": "lepton_search.latency", "list_targets": "lepton_search.latency",
    "register_target": "lepton_search.latency",
    "SearchResult": "lepton_search.results", "load": "lepton_search.api",
    "CompressionConfig": "lepton_search.space", "SearchSpace": "lepton_search.space",
    "default_space": "lepton_search.space",
    "search": "lepton_search.api",
    "Workload": "lepton_search.workloads", "list_workloads": "lepton_search.workloads",
    "ModelOptimizer": "lepton_search.optimizer", "migrate": "lepton_search.workloads.transfer",
}
__all__ = sorted([*_EXPORTS, "workloads"])  # noqa: PLE0605 - built from the lazy table
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "workloads":
        return importlib.import_module("lepton_search.workloads")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lepton_search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
