"""Host identity: tables and calibrated profiles record their CPU; used on another CPU they say so."""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import onnx
import pytest

from lepton_search.calibration.kernel_sweep import write_table
from lepton_search.calibration.profile_fit import measured_cpu
from lepton_search.cli import main
from lepton_search.latency.cpu_identity import (
    CpuIdentity,
    mismatch,
    nchwc_block,
    ort_version,
    parse_cpuinfo,
    recorded_block,
    this_cpu,
)
from lepton_search.latency.device_profile import load_profile, parse
from lepton_search.latency.kernel_model import KernelLatency, KernelTable
from lepton_search.latency.measure import COLUMNS
from lepton_search.latency.predicted import PredictedLatency
from lepton_search.testing.toy_graphs import mlp_net

XEON = CpuIdentity("Intel(R) Xeon(R) Platinum 8480+", "GenuineIntel", ("avx2", "avx512f", "avx512_vnni", "amx_tile"),
                   "1.32.0")
EPYC = CpuIdentity("AMD EPYC 9654 96-Core Processor", "AuthenticAMD", ("avx2", "avx512f", "avx512_vnni"), "1.32.0")
ROME = CpuIdentity("AMD EPYC 7502 32-Core Processor", "AuthenticAMD", ("avx2", "fma"))  # Zen 2: no AVX-512
ROWS = [{"graph": g, "cls": "gemm", "macs": m, "in_elems": 64, "out_elems": 16, "w_elems": m // 16, "k": 1, "us": us}
        for g, m, us in (("g0-b32", 1024, 2.0), ("g1-b32", 4096, 5.0), ("g2-b32", 16384, 14.0))]
GRAPHS = [{"graph": r["graph"], "n_kernels": 1, "kernel_sum_us": r["us"], "total_us": r["us"] + 3.0} for r in ROWS]


def table(cpu: CpuIdentity | dict | None) -> KernelTable:
    meta = {"heldout": {"mape_pct": 5.0}} | ({} if cpu is None else {"cpu": dict(cpu) if isinstance(cpu, dict)
                                                                      else cpu.as_dict()})
    return KernelTable.from_rows(ROWS, GRAPHS, meta=meta)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cpu") / "mlp.onnx"
    onnx.save(mlp_net((64, 16, 10)), str(path))
    return path


def test_cpuinfo_is_read_with_the_isa_flags_that_matter(tmp_path, monkeypatch):
    text = ("vendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_vnni sha_ni\n"
            "\nvendor_id\t: AuthenticAMD\n")
    cpu = parse_cpuinfo(text)
    assert (cpu.model, cpu.vendor, cpu.isa) == ("AMD EPYC", "AuthenticAMD", ("avx2", "avx512f", "avx512_vnni"))
    assert len(cpu.isa_hash) == 8 and cpu.slug == "amd-epyc"
    # this_cpu reads the file it is given, and adds the installed ONNX Runtime's version
    (tmp_path / "cpuinfo").write_text(text)
    assert this_cpu(tmp_path / "cpuinfo") == dataclasses.replace(cpu, onnxruntime=importlib.metadata.version(
        "onnxruntime"))
    # no cpuinfo (not Linux): the platform's processor name, else "unknown"
    monkeypatch.setattr("platform.processor", lambda: "")
    assert (this_cpu(tmp_path / "missing").model, this_cpu(tmp_path / "missing").vendor) == ("unknown", "unknown")
    monkeypatch.setattr("platform.processor", lambda: "arm")
    assert this_cpu(tmp_path / "missing").model == "arm"


def test_nchwc_block_follows_avx512f():
    """ORT's MLAS blocks NCHWc channels by 16 with AVX-512F, by 8 on other x86-64 CPUs (SSE to AVX2)."""
    assert nchwc_block(XEON.isa) == nchwc_block(EPYC.isa) == nchwc_block(["avx512f"]) == 16
    assert nchwc_block(ROME.isa) == nchwc_block(["avx2", "avx_vnni"]) == nchwc_block([]) == 8
    assert nchwc_block(["asimd", "asimddp"]) == 1  # Arm: assumed no NCHWc kernels (unverified)
    assert recorded_block(ROME.as_dict()) == 8 and recorded_block(EPYC.as_dict()) == 16
    # recorded before CPUs (or their ISA flags) were: all such tables were made on AVX-512 hosts
    assert recorded_block(None) == recorded_block({}) == recorded_block({"model": "Intel(R) Xeon(R)", "isa": None}) == 16


def test_another_cpu_is_reported_in_describe_and_each_estimate(mlp):
    target = KernelLatency(table=table(XEON), here=EPYC)
    info = target.describe()
    assert "Xeon" in info["host_mismatch"] and "EPYC" in info["host_mismatch"] and info["expected_error_pct"] is None
    est = target.latency(mlp)
    assert est.expected_error_pct is None and "re-calibrate" in est.details["host_mismatch"]


def test_another_onnxruntime_version_is_like_another_cpu(mlp):
    """Another ORT release may run other kernels: a host table or calibrated profile made under another version,
    or before versions were recorded, predicts with no expected error and says how to re-calibrate."""
    older = dataclasses.replace(EPYC, onnxruntime="1.31.0")
    unrecorded = {k: v for k, v in EPYC.as_dict().items() if k != "onnxruntime"}
    for recorded, was in ((older, "onnxruntime 1.31.0"), (unrecorded, "an unrecorded onnxruntime version")):
        target = KernelLatency(table=table(recorded), here=EPYC)
        info, est = target.describe(), target.latency(mlp)
        assert info["expected_error_pct"] is None and est.expected_error_pct is None
        assert info["warning"] == est.details["host_mismatch"] == info["host_mismatch"]
        assert was in info["warning"] and "this host has onnxruntime 1.32.0" in info["warning"]
        assert "`lepton-search calibrate --target host-cpu --kernels`" in info["warning"]
        assert "\n" not in info["warning"]
    data = {**load_profile("host-cpu-model").raw, "source": "calibrated", "expected_error_pct": 8.0}
    profile = PredictedLatency(profile=parse({**data, "cpu": older.as_dict()}, name="x"), here=EPYC)
    assert profile.describe()["expected_error_pct"] is None and "1.31.0" in profile.describe()["warning"]
    assert "1.31.0" in profile.latency(mlp).details["host_mismatch"]
    # a device's table is never compared with this host: its version is recorded for information only
    device = KernelLatency(table=table(older), name="rpi4-kernels", here=EPYC)
    assert device.host_mismatch is None and device.table.meta["cpu"]["onnxruntime"] == "1.31.0"
    assert mismatch(EPYC.as_dict(), dataclasses.replace(EPYC, onnxruntime=None)).endswith(
        "`--target <profile>` for a profile)")


def test_this_host_records_its_onnxruntime_version():
    import onnxruntime

    assert ort_version() == onnxruntime.__version__ == this_cpu().onnxruntime
    assert this_cpu().as_dict()["onnxruntime"] == ort_version()


def test_same_model_with_other_isa_extensions_is_a_mismatch():
    other = CpuIdentity(EPYC.model, EPYC.vendor, ("avx2",))
    assert "avx512f" in mismatch(EPYC.as_dict(), other)


def test_matching_host_is_not_flagged(mlp):
    target = KernelLatency(table=table(EPYC), here=EPYC)
    assert target.describe()["warning"] is None and target.describe()["expected_error_pct"] == 5.0
    est = target.latency(mlp)
    assert est.expected_error_pct == 5.0 and "host_mismatch" not in est.details


def test_a_table_of_another_device_is_not_compared_with_this_host():
    assert KernelLatency(table=table(XEON), name="rpi4-kernels", here=EPYC).host_mismatch is None


def test_old_table_without_a_cpu_loads_as_cpu_unknown(mlp, tmp_path):
    path = write_table(ROWS, GRAPHS, tmp_path / "old.csv", meta={"heldout": {"mape_pct": 5.0}})
    target = KernelLatency(table=path, here=EPYC)
    info = target.describe()
    assert info["cpu"] == "CPU unknown" and "CPU unknown" in info["warning"] and info["expected_error_pct"] == 5.0
    assert "CPU unknown" in target.latency(mlp).details["cpu_warning"]


def test_targets_lists_the_mismatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path))
    other = XEON if this_cpu().vendor != XEON.vendor else EPYC
    write_table(ROWS, GRAPHS, tmp_path / "host-cpu-kernels.csv", meta={"cpu": other.as_dict()})
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    line = next(i for i, s in enumerate(out.splitlines()) if s.startswith("host-cpu-kernels "))
    assert "warning: measured on " + other.model in out.splitlines()[line + 1]


def test_calibrated_profile_of_another_cpu_is_flagged():
    data = {**load_profile("host-cpu-model").raw, "source": "calibrated", "expected_error_pct": 8.0}
    target = PredictedLatency(profile=parse({**data, "cpu": XEON.as_dict()}, name="host-cpu-model-calibrated"),
                              here=EPYC)
    assert target.describe()["expected_error_pct"] is None and "Xeon" in target.describe()["host_mismatch"]
    same = PredictedLatency(profile=parse({**data, "cpu": EPYC.as_dict()}, name="x"), here=EPYC)
    assert same.describe()["warning"] is None and same.describe()["expected_error_pct"] == 8.0
    old = PredictedLatency(profile=parse(data, name="x"), here=EPYC)
    assert "CPU unknown" in old.describe()["warning"]
    assert PredictedLatency(profile="host-cpu-model", here=EPYC).describe()["warning"] is None  # priors: no CPU


def test_builtin_host_profile_claims_no_cpu_it_was_not_measured_on():
    profile = load_profile("host-cpu-model")
    assert "cpu" not in profile.raw and "Xeon" not in profile.device and "Sapphire" not in profile.device


def test_measurement_csv_records_the_cpu(tmp_path):
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerow({"file": "a.onnx", "p50_ms": 1, "cpu_model": EPYC.model, "cpu_vendor": EPYC.vendor,
                         "cpu_isa": " ".join(EPYC.isa)})
    assert measured_cpu(path) == dataclasses.replace(EPYC, onnxruntime=None).as_dict()  # no version column, no runtime
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerow({"file": "a.onnx", "p50_ms": 1, "cpu_model": EPYC.model, "cpu_vendor": EPYC.vendor,
                         "cpu_isa": " ".join(EPYC.isa), "onnxruntime": "1.32.0"})
    assert measured_cpu(path) == EPYC.as_dict()
    # written before the onnxruntime column: the version is read off `runtime`
    path.write_text(f"file,p50_ms,runtime,cpu_model,cpu_vendor,cpu_isa\na.onnx,1,onnxruntime 1.32.0 CPU,{EPYC.model},"
                    f"{EPYC.vendor},{' '.join(EPYC.isa)}\n")
    assert measured_cpu(path) == EPYC.as_dict()
    path.write_text("file,p50_ms\na.onnx,1\n")  # written before CPUs were recorded
    assert measured_cpu(path) is None


def test_experiment_uses_a_table_of_this_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "latency_model_accuracy", Path(__file__).parents[2] / "experiments" / "latency_model_accuracy.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    cached = write_table(ROWS, GRAPHS, tmp_path / "host_kernel_table.csv", meta={"cpu": this_cpu().as_dict()})
    assert exp.table_for_this_cpu(cached) == cached
    meta = json.loads(cached.with_suffix(".json").read_text())
    other = XEON if this_cpu().vendor != XEON.vendor else EPYC
    cached.with_suffix(".json").write_text(json.dumps({**meta, "cpu": other.as_dict()}))
    assert exp.table_for_this_cpu(cached) == tmp_path / f"host_kernel_table-{this_cpu().slug}.csv"
