"""Target profiles: a device's peaks, bandwidth, overheads and efficiency factors, each with its source.

A profile is a YAML file (built-ins in `lepton_search/latency/profiles/`, user ones in the folder named
by `$LEPTON_PROFILE_DIR`, default `~/.config/lepton_search/profiles`). Every figure is either a bare
number or `{value: X, source: "...", verified: true|false}`; a figure nobody checked says `verified: false`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lepton_search.errors import ConfigError

BUILTIN_DIR = Path(__file__).with_name("profiles")
PRECISIONS = ("fp32", "fp16", "int8", "int4")
OP_CLASSES = ("conv", "dwconv", "gemm", "other", "dequant")
SOURCES = ("predicted", "calibrated")


def user_dir() -> Path:
    return Path(os.environ.get("LEPTON_PROFILE_DIR", Path.home() / ".config" / "lepton_search" / "profiles"))


def profile_paths() -> dict[str, Path]:
    """Target name -> profile file; a user profile overrides a built-in one of the same name."""
    found: dict[str, Path] = {}
    for folder in (BUILTIN_DIR, user_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return found


@dataclass(frozen=True)
class Profile:
    """A device profile with every figure resolved to a number (`provenance` keeps where each came from)."""

    name: str
    device: str
    source: str
    expected_error_pct: float
    native_precisions: tuple[str, ...]
    native_sparsity: tuple[str, ...]
    fallback: dict[str, str]
    peak_gmacs: dict[str, float]
    memory_gbps: float
    memory_efficiency: float
    compute_efficiency: dict[str, dict[str, float]]
    overhead_us: dict[str, float]
    graph_overhead_us: float
    usd_per_hour: float | None = None
    threads: int | None = None
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def run_precision(self, precision: str) -> str:
        """The precision a node of `precision` computes in on this device."""
        if precision in self.native_precisions:
            return precision
        return self.fallback.get(precision, "fp32")

    @property
    def unverified(self) -> list[str]:
        return sorted(k for k, v in self.provenance.items() if not v.get("verified", False))


def _figure(raw: Any, path: str, prov: dict[str, dict[str, Any]]) -> float:
    if isinstance(raw, dict):
        if "value" not in raw:
            raise ConfigError(path, raw, "give a number or {value: X, source: '...', verified: true|false}")
        prov[path] = {"source": raw.get("source", "unknown"), "verified": bool(raw.get("verified", False))}
        raw = raw["value"]
    else:
        prov[path] = {"source": "unknown", "verified": False}
    if not isinstance(raw, (int, float)) or isinstance(raw, bool) or raw <= 0:
        raise ConfigError(path, raw, "must be a number > 0")
    return float(raw)


def _section(data: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ConfigError(f"{name}.{key}", value, "must be a mapping")
    return value


def parse(data: dict[str, Any], *, name: str) -> Profile:
    """Validate a profile mapping (as read from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(name, type(data).__name__, "a profile must be a YAML mapping")
    prov: dict[str, dict[str, Any]] = {}
    source = data.get("source", "predicted")
    if source not in SOURCES:
        raise ConfigError(f"{name}.source", source, f"must be one of {list(SOURCES)}")
    native = tuple(data.get("native_precisions", ["fp32"]))
    for p in native:
        if p not in PRECISIONS:
            raise ConfigError(f"{name}.native_precisions", p, f"choose from {list(PRECISIONS)}")
    peaks = {p: _figure(v, f"peak_gmacs.{p}", prov) for p, v in _section(data, "peak_gmacs", name).items()}
    missing = [p for p in native if p not in peaks]
    if missing:
        raise ConfigError(f"{name}.peak_gmacs", sorted(peaks), f"add a peak for the native precisions {missing}")
    eff = _section(data, "compute_efficiency", name)
    comp: dict[str, dict[str, float]] = {}
    for cls in OP_CLASSES:
        row = eff.get(cls, {})
        comp[cls] = {p: _figure(row[p], f"compute_efficiency.{cls}.{p}", prov) for p in PRECISIONS if p in row}
        if "fp32" not in comp[cls]:
            raise ConfigError(f"{name}.compute_efficiency.{cls}", row, "give at least an fp32 efficiency (0..1]")
    over = _section(data, "overhead_us", name)
    price = data.get("usd_per_hour")
    return Profile(
        name=name, device=str(data.get("device", name)), source=source,
        expected_error_pct=float(data.get("expected_error_pct", 100.0)), native_precisions=native,
        native_sparsity=tuple(data.get("native_sparsity", [])), fallback=dict(data.get("fallback", {})),
        peak_gmacs=peaks, memory_gbps=_figure(data.get("memory_gbps"), "memory_gbps", prov),
        memory_efficiency=_figure(data.get("memory_efficiency", 0.5), "memory_efficiency", prov),
        compute_efficiency=comp,
        overhead_us={c: _figure(over.get(c, over.get("other", 1.0)), f"overhead_us.{c}", prov)
                     for c in OP_CLASSES if c != "dequant"},
        graph_overhead_us=_figure(data.get("graph_overhead_us", 10.0), "graph_overhead_us", prov),
        usd_per_hour=None if price is None else _figure(price, "usd_per_hour", prov),
        threads=data.get("threads"), provenance=prov, raw=data,
    )


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by target name (see `profile_paths`) or by YAML path."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        paths = profile_paths()
        if str(name_or_path) not in paths:
            from lepton_search.errors import did_you_mean

            raise ConfigError("target", name_or_path, f"no such profile; {did_you_mean(str(name_or_path), paths)}")
        path = paths[str(name_or_path)]
    if not path.is_file():
        raise ConfigError("profile", str(path), "pass an existing profile YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("profile", str(path), f"fix the YAML syntax ({exc})") from None
    return parse(data, name=path.stem)


def save_profile(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
    return path
