"""Latency targets by name. A target is a `LatencyModel`; `host-cpu` measures with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.latency._base import (
    SAMPLE_INPUTS_FILE,
    LatencyEstimate,
    LatencyModel,
    load_inputs,
    save_inputs,
)
from lepton_search.latency.host_cpu import HostCpuLatency

__all__ = ["SAMPLE_INPUTS_FILE", "HostCpuLatency", "LatencyEstimate", "LatencyModel", "get_target", "latency_target",
           "list_targets", "load_inputs", "register_target", "save_inputs"]

_TARGETS: dict[str, Callable[..., LatencyModel]] = {"host-cpu": HostCpuLatency}


def register_target(name: str, factory: Callable[..., LatencyModel]) -> None:
    _TARGETS[name] = factory


def _register_discovered() -> None:
    """Targets found on disk, read on demand: every profile YAML (built-in or in the user profile folder) is a
    predicted target; `host-cpu-kernels` and every `<device>-kernels.csv` in the profile folder a kernel-table
    target. A name registered by hand is never replaced; a discovered one whose file is gone (the folder changed,
    `LEPTON_PROFILE_DIR` points elsewhere) is dropped."""
    from lepton_search.latency.device_profile import profile_paths
    from lepton_search.latency.kernel_model import table_factory, table_targets
    from lepton_search.latency.predicted import profile_factory

    for names, make, marker in ((profile_paths(), profile_factory, "from_profile"),
                                (table_targets(), table_factory, "from_table")):
        names = list(names)
        for gone in [n for n, f in _TARGETS.items() if getattr(f, marker, False) and n not in names]:
            del _TARGETS[gone]
        for name in names:
            if name not in _TARGETS or getattr(_TARGETS[name], marker, False):
                factory = make(name)
                setattr(factory, marker, True)
                _TARGETS[name] = factory


def list_targets() -> list[str]:
    _register_discovered()
    return sorted(_TARGETS)


def get_target(name: str, **kwargs: object) -> LatencyModel:
    _register_discovered()
    if name not in _TARGETS:
        raise ConfigError("target", name, f"unknown target; {did_you_mean(name, _TARGETS)}")
    return _TARGETS[name](**kwargs)


def latency_target(target: str | LatencyModel, timing: Mapping[str, Any] | None = None) -> LatencyModel:
    """A target as given, or by name; `host-cpu` timed with `timing` (a study's latency settings: threads,
    batch_size, warmup, runs, max_cv, max_repeats), any other name as registered.

    Example:
        >>> latency_target("host-cpu", {"threads": 2}).threads
        2
    """
    if isinstance(target, LatencyModel):
        return target
    if target == "host-cpu":
        return get_target(target, **dict(timing or {}))
    return get_target(target)
