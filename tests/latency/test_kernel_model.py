"""Kernel-level latency: ORT's kernels emulated from the graph, a tiny sweep, table prediction vs measurement."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from lepton_search.calibration.kernel_graphs import _Net
from lepton_search.calibration.kernel_sweep import pair, precision_forms, sweep, write_table
from lepton_search.latency import _boost
from lepton_search.latency.host_cpu import HostCpuLatency, session
from lepton_search.latency.kernel_model import KernelTable, fit_class_overheads
from lepton_search.latency.kernels import Kernel, emulate
from lepton_search.latency.ort_profiler import node_class
from lepton_search.techniques import quantize
from lepton_search.testing.toy_graphs import conv_net, mlp_net


def _ort_kernels(path, tmp_path):
    out = tmp_path / "opt.onnx"
    session(path, optimized_path=out)
    return collections.Counter(node_class(n) for n in onnx.load(str(out)).graph.node)


@pytest.mark.parametrize("bits", [32, 16, 4])
@pytest.mark.parametrize("build", [lambda: conv_net((16, 32, 40)), lambda: mlp_net((64, 128, 10))])
def test_emulated_kernels_match_ort(build, bits, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(quantize.quantize(build(), bits), str(path))
    assert collections.Counter(k.cls for k in emulate(path)) == _ort_kernels(path, tmp_path)


def _inverted_residual():
    """MobileNet-v2-like (ReLU6): in INT8 each block input is an int8 Q read by a conv and a residual Add, so
    ORT keeps it int8 (no uint8 conversion): the convs around it and the Add stay float, the shared DQ is
    copied per consumer and each unfused conv gets an int32 bias DQ."""
    net = _Net(np.random.default_rng(0), relu6=True)
    x = net.conv("input", 3, 16, 3, stride=2)
    for _ in range(2):
        y = net.conv(net.conv(x, 16, 64, 1), 64, 64, 3, group=64)
        x = net.add(net.conv(y, 64, 16, 1, act=False), x)
    return net.head(x, 16, [1, 3, 32, 32]), (1, 3, 32, 32)


def _odd_resnet():
    """ResNet-like stages at pruned widths (12, 18, 36): FP32 residual Adds between NCHWc and NCHW convs, and a
    tensor reordered to NCHW that an NCHWc conv later reads in NCHWc again (no second reorder)."""
    net = _Net(np.random.default_rng(0), relu6=False)
    x = net.conv("input", 3, 12, 3)
    x = net.act(net.add(net.conv(net.conv(x, 12, 12, 3), 12, 12, 3, act=False), x))
    for ci, co in ((12, 18), (18, 36)):
        body = net.conv(net.conv(x, ci, co, 3), co, co, 3, act=False)
        x = net.act(net.add(body, net.conv(x, ci, co, 1, act=False)))
    return net.head(x, 36, [1, 3, 16, 16]), (1, 3, 16, 16)


def _pool_into_float_conv():
    """INT8: a MaxPool read by a float (per-channel quantized) depthwise conv stays a float pool, and a Relu
    after a float Add is dropped because the Q after it clips anyway."""
    net = _Net(np.random.default_rng(0), relu6=False)
    x = net.maxpool(net.conv("input", 3, 16, 3))
    x = net.conv(net.conv(x, 16, 16, 3, group=16), 16, 16, 1, act=False)
    y = net.conv(net.conv(x, 16, 32, 1), 32, 16, 1, act=False)
    x = net.act(net.add(y, x))
    return net.head(x, 16, [1, 3, 16, 16]), (1, 3, 16, 16)


@pytest.mark.parametrize(("build", "bits"), [(_inverted_residual, 8), (_odd_resnet, 32), (_pool_into_float_conv, 8)])
def test_emulated_residual_graphs_match_ort(build, bits, tmp_path):
    model, shape = build()
    path = tmp_path / "m.onnx"
    onnx.save(precision_forms(model, shape, bits, 0), str(path))
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
    measured = HostCpuLatency(runs=30).latency(path).p50_ms
    predicted = kt.predict_ms(path)
    assert 0.33 < predicted / measured < 3.0  # a 3-graph table: the order of magnitude, not the bar


def test_overhead_fit_recovers_known_line():
    graphs = [{"n_kernels": n, "kernel_sum_us": 10.0 * n, "total_us": 10.0 * n + 6.0 + 1.5 * n} for n in (2, 5, 9)]
    per_call, per_kernel = fit_class_overheads(graphs, [{"conv": g["n_kernels"]} for g in graphs])
    assert per_call == pytest.approx(6.0, rel=1e-3) and per_kernel["conv"] == pytest.approx(1.5, rel=1e-3)


def test_kernel_predictor_runs_without_onnxruntime_or_torch(table, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mlp_net((32, 16, 10)), str(path))
    code = textwrap.dedent(f"""
        import sys
        sys.modules["onnxruntime"] = None
        sys.modules["torch"] = None
        from lepton_search.latency.kernel_model import KernelLatency
        est = KernelLatency(table={str(table)!r}).latency({str(path)!r})
        assert est.source == "calibrated" and est.p50_ms > 0
        print(est.p50_ms)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr


def test_dq_kernels_are_kept_apart_by_width():
    int4 = emulate(quantize.quantize(mlp_net((64, 128, 10)), 4))
    model, shape = _inverted_residual()
    int8 = emulate(precision_forms(model, shape, 8, 0))
    assert {k.table_class for k in int4 if k.cls == "dq"} == {"dq4"}
    # activations/weights; INT32 bias DQs only where the quantizer keeps biases quantized (per-tensor NNCF: not)
    assert "dq8" in {k.table_class for k in int8 if k.cls == "dq"} <= {"dq8", "dq32"}
    rows = [{"graph": "g", "cls": "dq", "macs": 0, "in_elems": 1000, "out_elems": 1000, "w_elems": 0, "k": 1,
             "bits": b, "us": us} for b, us in ((4, 40.0), (8, 4.0))]
    graphs = [{"graph": "g", "n_kernels": 2, "kernel_sum_us": 44.0, "total_us": 50.0},
              {"graph": "h", "n_kernels": 1, "kernel_sum_us": 4.0, "total_us": 8.0}]
    kt = KernelTable.from_rows(rows, graphs)
    slow, fast = (kt.kernel_us(k) for k in (next(k for k in int4 if k.cls == "dq"),
                                            next(k for k in int8 if k.table_class == "dq8")))
    assert set(kt.classes) == {"dq4", "dq8"} and slow > 3 * fast


def test_convs_and_gemms_on_run_time_weights_are_their_own_classes():
    """INT4 weights are dequantized every call: ORT cannot prepack them and they arrive hot in cache, so the
    table must not mix those kernels with FP32 ones of the same shape."""
    for net, cls in ((conv_net((16, 32)), "conv"), (mlp_net((64, 128, 10)), "gemm")):
        assert not any(k.runtime_w for k in emulate(net))
        assert {k.table_class for k in emulate(quantize.quantize(net, 4)) if k.cls == cls} == {f"{cls}_rtw"}


def test_pairing_follows_node_names_when_ort_runs_branches_in_another_order():
    body = Kernel("qconv", 2.6e6, 24576, 12288, 10368, 3, names=("/body/Conv", "b0"))
    short = Kernel("qconv", 2.9e5, 24576, 12288, 1152, 1, names=("/short/Conv", "s0"))
    # ORT ran the shortcut first; the profiler hides prepacked weights, so sizes alone cannot tell them apart
    measured = [("qconv", 6.0, (24576, 48, 12288), "/short/Conv_token_27"),
                ("qconv", 12.0, (24576, 48, 12288), "/body/Conv_token_21")]
    paired, exact = pair([body, short], measured)
    assert exact and [(k.names[0], us) for k, us in paired] == [("/body/Conv", 12.0), ("/short/Conv", 6.0)]


def test_pairing_falls_back_to_sizes_then_order():
    big, small = Kernel("layout", 0.0, 4096, 4096), Kernel("layout", 0.0, 64, 64)
    measured = [("layout", 1.0, (64, 0, 64), "ReorderOutput"), ("layout", 9.0, (4096, 0, 4096), "ReorderInput")]
    assert [us for _, us in pair([big, small], measured)[0]] == [9.0, 1.0]
    assert [us for _, us in pair([big, small], [(c, us) for c, us, *_ in measured])[0]] == [1.0, 9.0]


def test_boosted_trees_learn_a_step_and_a_curve_deterministically():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 4, (600, 3))
    y = np.sin(x[:, 0]) + 0.8 * (x[:, 1] > 2.5)  # the third column is noise
    model = _boost.fit(x, y, seed=0)
    test = rng.uniform(0, 4, (300, 3))
    err = np.abs(model.predict(test) - (np.sin(test[:, 0]) + 0.8 * (test[:, 1] > 2.5)))
    assert np.mean(err) < 0.12
    assert np.array_equal(_boost.fit(x, y, seed=0).predict(test), model.predict(test))
    assert np.allclose(_boost.fit(x, np.full(600, 2.0)).predict(test), 2.0)  # nothing to split on
