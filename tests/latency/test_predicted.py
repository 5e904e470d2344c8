"""Predicted targets: graph costs against hand counts, precision detection, profiles, search end to end."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from lepton_search.errors import ConfigError
from lepton_search.latency import get_target, list_targets
from lepton_search.latency._base import usd_per_million_inferences
from lepton_search.latency.device_profile import load_profile, parse
from lepton_search.latency.graph_cost import analyze
from lepton_search.latency.predicted import PredictedLatency, work_items
from lepton_search.techniques import quantize
from lepton_search.testing.toy_graphs import conv_net, mlp_net

PROFILES = ("host-cpu-model", "intel-xeon-vnni", "jetson-orin-nano", "nvidia-t4", "raspberry-pi-4")


def test_macs_match_hand_count():
    convs = [c for c in analyze(conv_net((4, 8), size=16)) if c.op_class == "conv"]
    assert [c.macs for c in convs] == [4 * 16 * 16 * 3 * 9, 8 * 16 * 16 * 4 * 9]
    assert all(c.precision == "fp32" for c in convs)
    (gemm,) = analyze(mlp_net((16, 10)), batch_size=2)
    assert gemm.macs == 2 * 16 * 10 and gemm.weight_bytes == 16 * 10 * 4


@pytest.mark.parametrize(("bits", "precision", "weight_bytes"), [(16, "fp16", 2.0), (4, "int4", 0.5)])
def test_weight_precision_detected(bits, precision, weight_bytes):
    model = quantize.quantize(mlp_net((64, 32, 10)), bits)
    gemms = [c for c in analyze(model) if c.op_class == "gemm"]
    assert [c.precision for c in gemms] == [precision, precision]
    assert gemms[0].weight_bytes == 64 * 32 * weight_bytes


def test_int4_falls_back_with_dequant_cost_on_cpu():
    profile = load_profile("raspberry-pi-4")
    fp32 = work_items(analyze(mlp_net((256, 256, 10))), profile)
    int4 = work_items(analyze(quantize.quantize(mlp_net((256, 256, 10)), 4)), profile)
    assert "dequant/fp32" in int4.eff_key and "gemm/fp32" in int4.eff_key
    model = PredictedLatency(profile=profile)
    assert len(int4.names) > len(fp32.names)
    assert model.profile.run_precision("int4") == "fp32"


def test_profiles_registered_and_sourced():
    assert set(PROFILES) <= set(list_targets())
    for name in PROFILES:
        p = load_profile(name)
        assert p.source == "predicted" and p.expected_error_pct >= 50
        assert all("source" in v for v in p.provenance.values())
    assert load_profile("nvidia-t4").provenance["peak_gmacs.fp32"]["verified"] is True


def test_predicted_estimate_and_price(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(conv_net((8, 16)), str(path))
    est = get_target("nvidia-t4").latency(path)
    assert est.source == "predicted" and est.details["uncalibrated"] and est.expected_error_pct == 100
    assert est.usd_per_million_inferences == pytest.approx(0.35 / (3600 / (est.p50_ms / 1e3)) * 1e6)
    assert usd_per_million_inferences(3.6, 1.0) == pytest.approx(1.0)
    assert get_target("raspberry-pi-4").latency(path).p50_ms > est.p50_ms


def test_bad_profile_is_one_line_config_error():
    data = load_profile("nvidia-t4").raw | {"memory_gbps": -1}
    with pytest.raises(ConfigError, match="memory_gbps"):
        parse(data, name="broken")
    with pytest.raises(ConfigError, match="did you mean 'nvidia-t4'"):
        get_target("nvidia-t5")


def test_predictor_runs_without_onnxruntime_or_torch(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(quantize.quantize(mlp_net((32, 16, 10)), 4), str(path))
    code = textwrap.dedent(f"""
        import sys
        sys.modules["onnxruntime"] = None
        sys.modules["torch"] = None
        from lepton_search.latency import get_target
        est = get_target("jetson-orin-nano").latency({str(path)!r})
        assert est.source == "predicted" and est.p50_ms > 0
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print(est.p50_ms)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) > 0


def test_search_on_predicted_target_end_to_end(digits_mlp, sqlite_url):
    from lepton_search import SearchSpace, search

    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 0),
                        objectives=("accuracy", "usd_per_million_inferences"), trials=2)
    result = search(digits_mlp, space, target="nvidia-t4", n_trials=2, storage=sqlite_url, study_name="t4",
                    verbose=False)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        assert t.user_attrs["latency_source"] == "predicted"
        assert t.values[1] == pytest.approx(t.user_attrs["usd_per_million_inferences"])
        assert isinstance(t.user_attrs["slower_than_base"], bool)
    assert result.base.latency_source == "predicted"
    with pytest.raises(ConfigError, match="usd_per_hour"):
        search(digits_mlp, space, target="raspberry-pi-4", n_trials=1, storage=sqlite_url, study_name="pi",
               verbose=False)
    assert np.isfinite(result.base.usd_per_million_inferences)
