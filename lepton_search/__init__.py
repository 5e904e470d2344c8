"""lepton_search: find the best way to compress a PyTorch model for a target machine.

SearchSpace --suggest--> CompressionConfig --compress--> Candidate --evaluate--> Measurement
--> Optuna trial --> SearchResult (Pareto front, plots, export).
"""

from lepton_search import workloads
from lepton_search.candidate import Candidate, compress
from lepton_search.errors import ConfigError, LeptonError
from lepton_search.evaluate import Measurement, evaluate
from lepton_search.latency import LatencyEstimate, LatencyModel, get_target, list_targets, register_target
from lepton_search.result import SearchResult, load
from lepton_search.space import CompressionConfig, SearchSpace, default_space
from lepton_search.study import search
from lepton_search.workloads import Workload, list_workloads

__all__ = [
    "Candidate", "CompressionConfig", "ConfigError", "LatencyEstimate", "LatencyModel", "LeptonError", "Measurement",
    "SearchResult", "SearchSpace", "Workload", "compress", "default_space", "evaluate", "get_target", "list_targets",
    "list_workloads", "load", "register_target", "search", "workloads",
]
__version__ = "0.1.0"
