"""Kernel-table target: profiled kernel classes, remote measure -> CSV -> table, `host-cpu-kernels` in a search."""

from __future__ import annotations

import collections
import csv
import json
import subprocess
import sys
import textwrap

import onnx
import pytest

from lepton_search.calibration.kernel_sweep import write_graphs
from lepton_search.calibration.kernel_table import calibrate_kernels
from lepton_search.cli import main
from lepton_search.errors import ConfigError
from lepton_search.latency.cpu_identity import CpuIdentity, this_cpu
from lepton_search.latency.host_cpu import session
from lepton_search.latency.kernel_model import KernelLatency, KernelTable
from lepton_search.latency.kernels import emulate
from lepton_search.latency.measure import COLUMNS, input_shape
from lepton_search.latency.ort_profiler import KERNEL_COLUMNS, node_class, profile_kernels
from lepton_search.techniques import quantize
from lepton_search.testing.toy_graphs import conv_net, mlp_net


@pytest.mark.parametrize("bits", [32, 4])
@pytest.mark.parametrize("build", [lambda: conv_net((16, 32, 40)), lambda: mlp_net((64, 128, 10))])
def test_profiled_classes_match_optimized_graph(build, bits, tmp_path):
    """The device-side classifier (profiler events only) agrees with ORT's optimized graph."""
    path = tmp_path / "m.onnx"
    model = quantize.quantize(build(), bits)
    onnx.save(model, str(path))
    session(path, optimized_path=tmp_path / "opt.onnx")
    ref = collections.Counter(node_class(n) for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    shape = tuple(d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim)
    profiled = profile_kernels(path, shape, runs=2, warmup=1)
    assert collections.Counter(k.cls for k in profiled) == ref
    # what pairing matches on: each profiled kernel's output elements are those of an emulated one
    emulated = {(k.cls, k.out_elems) for k in emulate(path)}
    assert all((k.cls, k.out_elems) in emulated for k in profiled)


@pytest.mark.parametrize("channels", [(16, 30, 40), (18, 32), (12, 20, 36), (20, 6, 32), (5, 16)])
def test_emulation_follows_ort_on_pruned_channel_counts(channels, tmp_path):
    """NCHWc needs input channels % 4 == 0 (under 16 it reads NCHW): odd counts pruning leaves."""
    path = tmp_path / "m.onnx"
    onnx.save(conv_net(channels), str(path))
    session(path, optimized_path=tmp_path / "opt.onnx")
    ref = collections.Counter(node_class(n) for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert collections.Counter(k.cls for k in emulate(path)) == ref


def test_a_device_table_pairs_kernels_as_ort_runs_them_on_the_device(tmp_path):
    """Kernels measured on an AVX2-only CPU (NCHWc blocks of 8) are paired with, cross-validated on and
    predicted from the kernels ORT runs there, not those it would run on this host."""
    rome = CpuIdentity("AMD EPYC 7502 32-Core Processor", "AuthenticAMD", ("avx2", "fma"))
    folder, measured, profiled = tmp_path / "graphs", [], []
    folder.mkdir()
    for i, channels in enumerate([(12, 20, 36), (8, 24), (4, 8, 12)]):  # kernels that differ between the blocks
        file = f"g{i:03d}-b32.onnx"
        onnx.save(conv_net(channels), str(folder / file))
        kernels = emulate(folder / file, block=8)
        assert collections.Counter(k.cls for k in kernels) != collections.Counter(
            k.cls for k in emulate(folder / file, block=16))
        us = [1.0 + (k.macs + k.in_elems) / 1e4 for k in kernels]  # (as the device's profiler would report)
        profiled += [{"file": file, "node": (k.names or ("",))[0], "cls": k.cls, "us": t, "in_elems": k.in_elems,
                      "w_elems": k.w_elems, "out_elems": k.out_elems} for k, t in zip(kernels, us)]
        measured.append({"file": file, "p50_ms": (sum(us) + 5.0) / 1e3, "cpu_model": rome.model,
                         "cpu_vendor": rome.vendor, "cpu_isa": " ".join(rome.isa)})
    csv_path = tmp_path / "m.csv"
    for path, cols, data in ((csv_path, COLUMNS, measured), (tmp_path / "m.kernels.csv", KERNEL_COLUMNS, profiled)):
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(cols))
            writer.writeheader()
            writer.writerows(data)
    built = calibrate_kernels("rome-box", csv_path=csv_path, graphs_dir=folder, out=tmp_path)
    assert built.n_graphs == 3  # every graph paired in full (blocks of 16 would pair none)
    table = KernelTable.load(built.path)
    assert table.block == 8 and table.meta["cpu"]["isa"] == list(rome.isa)
    pred = table.predict_ms(folder / "g000-b32.onnx")
    assert pred == pytest.approx(measured[0]["p50_ms"], rel=0.5)


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """Sweep graphs written here, measured as on a device (torch and onnx unimportable), CSV back."""
    folder = tmp_path_factory.mktemp("sweep")
    write_graphs(folder, n_graphs=4, bits=(32, 4), seed=1)
    out = folder.parent / "m.csv"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["onnx"] = None
        from lepton_search.cli import main
        sys.exit(main(["measure", {str(folder)!r}, "--out", {str(out)!r}, "--runs", "20", "--kernels",
                       "--rounds", "2"]))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr
    return folder, out


def test_ingest_builds_table_with_heldout_error(remote, tmp_path, capsys):
    folder, out = remote
    with open(out.with_suffix(".kernels.csv"), newline="") as fh:
        per_file = collections.Counter(r["file"] for r in csv.DictReader(fh))
    assert set(per_file) == {p.name for p in folder.glob("*.onnx")}
    first = min(folder.glob("*.onnx"))  # two rounds keep one row per kernel (the faster), not two
    assert per_file[first.name] == len(profile_kernels(first, input_shape(first, 1), runs=2, warmup=1))
    assert main(["calibrate", "--target", "remote-box", "--kernels", "--csv", str(out), "--graphs", str(folder),
                 "--out", str(tmp_path)]) == 0
    assert "held-out" in capsys.readouterr().out
    table_csv = tmp_path / "remote-box-kernels.csv"
    meta = json.loads(table_csv.with_suffix(".json").read_text())
    assert meta["heldout"]["n"] == 8 and meta["heldout"]["mape_pct"] > 0
    assert meta["cpu"] == this_cpu().as_dict() and meta["cpu"]["onnxruntime"]  # the device's CPU and ORT version
    target = KernelLatency(table=table_csv)
    assert target.expected_error_pct == pytest.approx(meta["heldout"]["mape_pct"])
    # the table predicts a sweep graph it holds within a factor of 2 of its measured whole-call time
    with open(out, newline="") as fh:
        row = next(csv.DictReader(fh))
    pred = KernelTable.load(table_csv).predict_ms(folder / row["file"])
    assert 0.5 < pred / float(row["p50_ms"]) < 2.0


def test_kernel_cli_errors_are_one_line(remote, tmp_path, capsys):
    folder, out = remote
    assert main(["calibrate", "--target", "rpi4", "--kernels"]) == 2
    assert "--write-graphs" in capsys.readouterr().err
    assert main(["calibrate", "--kernels", "--csv", str(out)]) == 2
    assert "--graphs" in capsys.readouterr().err
    assert main(["calibrate", "--kernels", "--csv", str(tmp_path / "none.csv"), "--graphs", str(folder)]) == 2
    assert main(["calibrate", "--kernels", "--target", "../x", "--csv", str(out), "--graphs", str(folder)]) == 2
    assert main(["calibrate"]) == 2
    assert "--kernels" in capsys.readouterr().err


def test_missing_table_says_how_to_build_it(tmp_path, monkeypatch):
    from lepton_search.latency import get_target, list_targets

    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path))
    assert "host-cpu-kernels" in list_targets()
    with pytest.raises(ConfigError, match=r"run `lepton-search calibrate --target host-cpu --kernels`"):
        get_target("host-cpu-kernels")


def test_search_on_kernel_target_end_to_end(remote, tmp_path, monkeypatch, digits_mlp, sqlite_url):
    from lepton_search import SearchSpace, search
    from lepton_search.latency import list_targets

    folder, out = remote
    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path))
    assert main(["calibrate", "--target", "host-cpu", "--kernels", "--csv", str(out), "--graphs", str(folder)]) == 0
    assert (tmp_path / "host-cpu-kernels.csv").is_file() and "host-cpu-kernels" in list_targets()
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 0), trials=2)
    result = search(digits_mlp, space, target="host-cpu-kernels", n_trials=2, storage=sqlite_url,
                    study_name="kern", verbose=False)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        assert t.user_attrs["latency_source"] == "calibrated"
        assert t.user_attrs["latency_expected_error_pct"] > 0 and t.user_attrs["latency_ms"] > 0
    assert result.base.latency_source == "calibrated"


def test_refresh_scales_predictions_by_how_much_the_host_drifted(remote, tmp_path, monkeypatch, capsys):
    folder, out = remote
    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path))
    assert main(["calibrate", "--target", "host-cpu", "--kernels", "--csv", str(out), "--graphs", str(folder)]) == 0
    table_csv = tmp_path / "host-cpu-kernels.csv"
    graph = folder / "g000-b32.onnx"
    raw = KernelTable.load(table_csv).predict_ms(graph)
    assert KernelTable.load(table_csv).drift == 1.0
    assert main(["calibrate", "--kernels", "--refresh"]) == 0  # re-times the table's own FP32 sweep graphs
    assert "predictions" in capsys.readouterr().out
    after = KernelTable.load(table_csv)
    assert after.meta["drift"]["graphs"] == sum(g.endswith("-b32") for g in after.graph_us) >= 1
    assert 0.5 < after.drift < 2.0  # the same host, minutes later
    assert after.predict_ms(graph) == pytest.approx(raw * after.drift)
    assert main(["calibrate", "--refresh"]) == 2
    assert "--kernels" in capsys.readouterr().err
