"""Calibration: measure (torch-free) -> CSV -> fitted profile whose expected error is the held-out error."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from lepton_search.calibration.profile_fit import calibrate_profile, load_samples, read_measurements, scores
from lepton_search.cli import main
from lepton_search.latency.device_profile import load_profile
from lepton_search.latency.predicted import PredictedLatency, params_of, predict_ms
from lepton_search.testing.toy_graphs import write_set


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    write_set(folder)
    out = folder.parent / "measured.csv"
    # `measure` must work where torch is absent: run it with torch made unimportable.
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from lepton_search.cli import main
        rc = main(["measure", {str(folder)!r}, "--out", {str(out)!r}, "--runs", "20"])
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        sys.exit(rc)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr
    return folder, out


def test_measure_writes_one_row_per_graph(measured):
    folder, out = measured
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in folder.glob("*.onnx"))
    assert all(float(r["p50_ms"]) > 0 for r in rows)


def test_calibration_fits_and_reports_heldout_error(measured, tmp_path):
    folder, out = measured
    fit = calibrate_profile("host-cpu-model", graphs_dir=folder, csv_path=out, out=tmp_path / "cal.yaml")
    data = yaml.safe_load(fit.profile_path.read_text())
    assert data["source"] == "calibrated"
    assert data["expected_error_pct"] == pytest.approx(fit.heldout["mape_pct"], abs=0.01)
    assert data["calibration"]["scheme"] == "leave-one-group-out"
    cal = PredictedLatency(profile=fit.profile_path)
    assert cal.source == "calibrated"
    # The fit beats the uncalibrated guesses on the graphs it saw (checked against measurements).
    base = load_profile("host-cpu-model")
    samples = load_samples(folder, read_measurements(out), base)
    meas = np.array([s.measured_ms for s in samples])
    before = np.array([predict_ms(s.items, params_of(base), base.memory_gbps) for s in samples])
    after = np.array([predict_ms(s.items, fit.params, base.memory_gbps) for s in samples])
    assert scores(after, meas)["mape_pct"] < scores(before, meas)["mape_pct"]


def test_calibrate_cli_errors_are_one_line(measured, capsys):
    folder, out = measured
    assert main(["calibrate", "--target", "nvidia-t4"]) == 2
    assert "lepton-search measure" in capsys.readouterr().err
    assert main(["calibrate", "--target", "host-cpu-model", "--csv", str(out)]) == 2
    assert main(["calibrate", "--target", "nvidia-t5", "--csv", str(out), "--graphs", str(folder)]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_calibrate_cli_writes_profile(measured, tmp_path, monkeypatch, capsys):
    folder, out = measured
    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path))
    assert main(["calibrate", "--target", "host-cpu-model", "--csv", str(out), "--graphs", str(folder)]) == 0
    assert (tmp_path / "host-cpu-model-calibrated.yaml").is_file()
    from lepton_search.latency import get_target, list_targets

    assert "host-cpu-model-calibrated" in list_targets()
    assert get_target("host-cpu-model-calibrated").source == "calibrated"
    assert "held-out" in capsys.readouterr().out
