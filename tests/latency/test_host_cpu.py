import pytest
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.latency import HostCpuLatency, get_target, list_targets
from lepton_search.techniques.export import to_onnx


def _mlp(width):
    return nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def test_host_cpu_measures_median_p90_and_cv(tmp_path):
    path = tmp_path / "m.onnx"
    to_onnx(_mlp(64).eval(), torch.randn(1, 256), path)
    est = HostCpuLatency(threads=1, runs=30).latency(path)
    assert est.source == "measured" and est.threads == 1 and est.batch_size == 1
    assert 0 < est.p50_ms <= est.p90_ms
    assert est.cv is not None and 0 < est.cv < 1  # the spread of 5 block medians: never exactly 0 on a real clock
    assert est.details["runs"] == 30 and est.details["attempts"] >= 1


def test_host_cpu_repeats_while_the_spread_is_over_max_cv(tmp_path):
    """`max_cv` decides how many rounds run: none over the first when any spread is fine, `max_repeats` when
    none is (and then the round with the smallest spread is kept)."""
    path = tmp_path / "m.onnx"
    to_onnx(_mlp(16).eval(), torch.randn(1, 256), path)
    easy = HostCpuLatency(threads=1, runs=10, max_cv=float("inf"), max_repeats=3).latency(path)
    strict = HostCpuLatency(threads=1, runs=10, max_cv=0.0, max_repeats=3).latency(path)
    assert easy.details["attempts"] == 1 and strict.details["attempts"] == 3
    assert strict.cv is not None and strict.cv > 0


def test_bigger_model_measures_slower(tmp_path):
    small, big = tmp_path / "s.onnx", tmp_path / "b.onnx"
    to_onnx(_mlp(32).eval(), torch.randn(1, 256), small)
    to_onnx(_mlp(1024).eval(), torch.randn(1, 256), big)  # ~60x the MACs
    target = HostCpuLatency(runs=40)
    assert target.latency(big).p50_ms > 2 * target.latency(small).p50_ms


def test_batch_size_is_applied(tmp_path):
    path = tmp_path / "m.onnx"
    to_onnx(_mlp(512).eval(), torch.randn(1, 256), path)
    one = HostCpuLatency(runs=30, batch_size=1).latency(path)
    many = HostCpuLatency(runs=30, batch_size=64).latency(path)
    assert many.batch_size == 64 and many.p50_ms > one.p50_ms


def test_registry():
    assert "host-cpu" in list_targets()
    with pytest.raises(ConfigError, match="did you mean 'host-cpu'"):
        get_target("host-cpy")
