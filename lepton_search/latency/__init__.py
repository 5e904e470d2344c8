"""Latency targets by name. A target is a `LatencyModel`; `host-cpu` measures with ONNX Runtime."""

from __future__ import annotations

from collections.abc import Callable

from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.latency._base import LatencyEstimate, LatencyModel
from lepton_search.latency.host_cpu import HostCpuLatency

__all__ = ["HostCpuLatency", "LatencyEstimate", "LatencyModel", "get_target", "list_targets", "register_target"]

_TARGETS: dict[str, Callable[..., LatencyModel]] = {"host-cpu": HostCpuLatency}


def register_target(name: str, factory: Callable[..., LatencyModel]) -> None:
    _TARGETS[name] = factory


def _register_profiles() -> None:
    """Every profile YAML (built-in or in the user profile folder) is a predicted target; read on demand."""
    from lepton_search.latency.predicted import profile_factory
    from lepton_search.latency.profile import profile_paths

    for name in profile_paths():
        if name not in _TARGETS or getattr(_TARGETS[name], "from_profile", False):
            factory = profile_factory(name)
            factory.from_profile = True  # type: ignore[attr-defined]
            _TARGETS[name] = factory


def _register_kernel_tables() -> None:
    """`host-cpu-kernels` and every `<device>-kernels.csv` in the profile folder: kernel-table targets."""
    from lepton_search.latency.kernel_model import table_factory, table_targets

    for name in table_targets():
        if name not in _TARGETS or getattr(_TARGETS[name], "from_table", False):
            factory = table_factory(name)
            factory.from_table = True  # type: ignore[attr-defined]
            _TARGETS[name] = factory


def list_targets() -> list[str]:
    _register_profiles()
    _register_kernel_tables()
    return sorted(_TARGETS)


def get_target(name: str, **kwargs: object) -> LatencyModel:
    _register_profiles()
    _register_kernel_tables()
    if name not in _TARGETS:
        raise ConfigError("target", name, f"unknown target; {did_you_mean(name, _TARGETS)}")
    return _TARGETS[name](**kwargs)
