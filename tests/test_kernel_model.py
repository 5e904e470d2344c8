"""Kernel-level latency: ORT's kernels emulated from the graph, a tiny sweep, table prediction vs measurement."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import onnx
import pytest

from lepton_search.compress import quantize
from lepton_search.latency.host_cpu import HostCpuLatency, session
from lepton_search.latency.kernel_model import KernelTable, fit_overheads
from lepton_search.latency.kernel_sweep import _ort_class, sweep, write_table
from lepton_search.latency.kernels import emulate
from lepton_search.latency.toy_graphs import conv_net, mlp_net


def _ort_kernels(path, tmp_path):
    out = tmp_path / "opt.onnx"
    session(path, optimized_path=out)
    return collections.Counter(_ort_class(n) for n in onnx.load(str(out)).graph.node)


@pytest.mark.parametrize("bits", [32, 16, 4])
@pytest.mark.parametrize("build", [lambda: conv_net((16, 32, 40)), lambda: mlp_net((64, 128, 10))])
def test_emulated_kernels_match_ort(build, bits, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(quantize.quantize(build(), bits), str(path))
    assert collections.Counter(k.cls for k in emulate(path)) == _ort_kernels(path, tmp_path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rows, graphs = sweep(n_graphs=3, bits=(32, 4), seed=3, runs=15)
    return write_table(rows, graphs, tmp_path_factory.mktemp("kt") / "table.csv")


def test_table_predicts_a_measured_graph(table, tmp_path):
    kt = KernelTable.load(table)
    assert kt.classes and kt.per_call_us >= 0
    path = tmp_path / "m.onnx"
    onnx.save(conv_net((16, 32)), str(path))
    measured = HostCpuLatency(runs=30).latency(path, (1, 3, 16, 16)).p50_ms
    predicted = kt.predict_ms(path)
    assert 0.33 < predicted / measured < 3.0  # a 3-graph table: the order of magnitude, not the bar


def test_overhead_fit_recovers_known_line():
    graphs = [{"n_kernels": n, "kernel_sum_us": 10.0 * n, "total_us": 10.0 * n + 6.0 + 1.5 * n} for n in (2, 5, 9)]
    per_call, per_kernel = fit_overheads(graphs)
    assert per_call == pytest.approx(6.0) and per_kernel == pytest.approx(1.5)


def test_kernel_predictor_runs_without_onnxruntime_or_torch(table, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_net((32, 16, 10)), str(path))
    code = textwrap.dedent(f"""
        import sys
        sys.modules["onnxruntime"] = None
        sys.modules["torch"] = None
        from lepton_search.latency.kernel_model import KernelLatency
        est = KernelLatency(table={str(table)!r}).latency({str(path)!r}, (1, 32))
        assert est.source == "calibrated" and est.p50_ms > 0
        print(est.p50_ms)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
