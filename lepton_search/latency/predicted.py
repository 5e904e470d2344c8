"""Predicted latency: an analytic per-node model over the ONNX graph and a device profile.

    latency = graph_overhead + sum over nodes of max(compute_time, memory_time) + overhead[op class]
    compute_time = MACs / (peak_gmacs[precision] * compute_efficiency[op class][precision])
    memory_time  = bytes moved / (memory_gbps * memory_efficiency)

A precision the device cannot run natively computes in its `fallback` precision; INT4/INT8 weights
that fall back are dequantized at run time (an extra memory-bound pass over the weights). 2:4 or
unstructured weight sparsity only shortens compute where the profile lists it in `native_sparsity`.
Imports only onnx, numpy and yaml: never torch, never onnxruntime.

Example:
    >>> model = PredictedLatency(profile="nvidia-t4")  # doctest: +SKIP
    >>> model.latency("model.onnx").p50_ms  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.latency._base import Inputs, LatencyEstimate, LatencyModel, batch_of
from lepton_search.latency.cpu_identity import CpuIdentity, mismatch, this_cpu
from lepton_search.latency.device_profile import Profile, load_profile
from lepton_search.latency.graph_cost import BYTES, NodeCost, analyze


@dataclass(frozen=True)
class WorkItems:
    """A graph's nodes as arrays, after a profile's fallbacks: what the time formula consumes."""

    eff_key: list[str]  # "<op class>/<run precision>"
    over_key: list[str]  # op class whose per-op overhead applies
    macs: np.ndarray
    peak_gmacs: np.ndarray
    bytes: np.ndarray
    names: list[str]


def work_items(costs: list[NodeCost], profile: Profile) -> WorkItems:
    """Apply fallback precisions, run-time dequantization and native sparsity to the node costs."""
    eff_key, over_key, names, macs, peaks, nbytes = [], [], [], [], [], []

    def add(name: str, key: str, over: str, m: float, peak: float, b: float) -> None:
        names.append(name)
        eff_key.append(key)
        over_key.append(over)
        macs.append(m)
        peaks.append(peak)
        nbytes.append(b)

    for c in costs:
        run = profile.run_precision(c.precision) if c.macs else "fp32"
        peak = profile.peak_gmacs.get(run, profile.peak_gmacs["fp32"])
        m = c.macs
        if c.two_four and "2:4" in profile.native_sparsity and run in ("fp16", "int8"):
            m *= 0.5
        elif "unstructured" in profile.native_sparsity:
            m *= 1.0 - c.weight_sparsity
        w_bytes, act_bytes = c.weight_bytes, c.act_bytes
        if run != c.precision and c.macs:
            w_bytes = c.weight_elems * BYTES[run]
            if c.precision == "int8":
                act_bytes *= BYTES[run]  # activations no longer travel as 1-byte integers
            if c.precision in ("int4", "int8", "int8w") and c.weight_elems:
                # one dequantization per weight element, every run (counted as a MAC at dequant efficiency)
                add(f"{c.name}/dequant", f"dequant/{run}", "other", float(c.weight_elems), peak,
                    c.weight_elems * (BYTES[c.precision] + BYTES[run]))
        add(c.name, f"{c.op_class}/{run}", c.op_class, m, peak, w_bytes + act_bytes)
    return WorkItems(eff_key, over_key, np.array(macs), np.array(peaks), np.array(nbytes), names)


def params_of(profile: Profile) -> dict[str, float]:
    """The fittable figures of a profile, flat: eff:<class>/<prec>, memory_efficiency, over:<class>, graph."""
    out = {f"eff:{cls}/{p}": v for cls, row in profile.compute_efficiency.items() for p, v in row.items()}
    out.update({f"over:{cls}": v for cls, v in profile.overhead_us.items()})
    out["memory_efficiency"] = profile.memory_efficiency
    out["graph_overhead_us"] = profile.graph_overhead_us
    return out


def efficiency(params: dict[str, float], key: str) -> float:
    """Efficiency of `<class>/<prec>`, falling back to the class's FP32 figure when not given."""
    return params.get(f"eff:{key}", params[f"eff:{key.split('/')[0]}/fp32"])


def node_times_s(items: WorkItems, params: dict[str, float], memory_gbps: float) -> np.ndarray:
    eff = np.array([efficiency(params, k) for k in items.eff_key])
    over = np.array([params[f"over:{k}"] for k in items.over_key])
    compute = items.macs / (items.peak_gmacs * 1e9 * eff)
    memory = items.bytes / (memory_gbps * 1e9 * params["memory_efficiency"])
    return np.maximum(compute, memory) + over * 1e-6


def predict_ms(items: WorkItems, params: dict[str, float], memory_gbps: float) -> float:
    return float(node_times_s(items, params, memory_gbps).sum() * 1e3 + params["graph_overhead_us"] * 1e-3)


class PredictedLatency(LatencyModel):
    """A target whose latency is predicted from a profile (`source` predicted or calibrated)."""

    def __init__(self, *, profile: str | Path | Profile, batch_size: int = 1, here: CpuIdentity | None = None) -> None:
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.name, self.source, self.batch_size = self.profile.name, self.profile.source, batch_size
        # a profile of this host (`measure_here`) calibrated on another CPU does not describe this one
        recorded = self.profile.raw.get("cpu")
        calibrated_here = self.profile.raw.get("measure_here", False) and self.source == "calibrated"
        self.cpu_warning = ("CPU unknown: calibrated before CPUs were recorded"
                            if calibrated_here and not recorded else None)
        self.host_mismatch = mismatch(recorded, here or this_cpu()) if calibrated_here and recorded else None

    def latency(self, onnx_path: str | Path, inputs: Inputs | None = None) -> LatencyEstimate:
        batch = self.batch_size if inputs is None else batch_of(inputs)
        items = work_items(analyze(onnx_path, batch_size=batch), self.profile)
        params = params_of(self.profile)
        times = node_times_s(items, params, self.profile.memory_gbps)
        ms = float(times.sum() * 1e3 + params["graph_overhead_us"] * 1e-3)
        by_class: dict[str, float] = {}
        for key, t in zip(items.eff_key, times):
            by_class[key] = by_class.get(key, 0.0) + float(t) * 1e3
        details: dict[str, Any] = {
            "profile": self.profile.name, "device": self.profile.device, "ms_by_class": by_class,
            "macs": float(items.macs.sum()), "bytes": float(items.bytes.sum()), "nodes": len(items.names),
            "uncalibrated": self.profile.source != "calibrated",
        }
        if self.profile.usd_per_hour is not None:
            details["usd_per_hour"] = self.profile.usd_per_hour
        details.update((k, v) for k, v in (("host_mismatch", self.host_mismatch), ("cpu_warning", self.cpu_warning)) if v)
        err = None if self.host_mismatch else self.profile.expected_error_pct
        return LatencyEstimate(p50_ms=ms, p90_ms=ms * (1 + (err or 0) / 100), source=self.source, cv=None,
                               expected_error_pct=err, threads=self.profile.threads, batch_size=batch,
                               details=details)

    def describe(self) -> dict[str, Any]:
        p = self.profile
        note = "calibrated against measurements" if p.source == "calibrated" else (
            "uncalibrated: datasheet peaks and guessed efficiencies; run `lepton-search calibrate`")
        return {"name": p.name, "source": p.source, "device": p.device,
                "expected_error_pct": None if self.host_mismatch else p.expected_error_pct,
                "usd_per_hour": p.usd_per_hour, "note": note, "unverified_figures": p.unverified,
                "cpu": (p.raw.get("cpu") or {}).get("model"), "host_mismatch": self.host_mismatch,
                "warning": self.host_mismatch or self.cpu_warning}


def profile_factory(name: str):
    """A `register_target` factory for the profile called `name` (loaded when the target is built)."""

    def factory(**kwargs: Any) -> PredictedLatency:
        return PredictedLatency(profile=name, **kwargs)

    return factory
