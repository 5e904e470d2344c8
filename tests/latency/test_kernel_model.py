"""Kernel-level latency: ORT's kernels emulated from the graph, a tiny sweep, table prediction vs measurement."""

from __future__ import annotations

import collections
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from lepton_search.calibration.kernel_graphs import _Net
from lepton_search.calibration.kernel_sweep import pair, precision_forms, sweep, write_table
from lepton_search.latency import _boost
from lepton_search.latency.cpu_identity import CpuIdentity, this_cpu
from lepton_search.latency.host_cpu import HostCpuLatency, session
from lepton_search.latency.kernel_model import KernelLatency, KernelTable, fit_class_overheads
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


RESIDUAL_GRAPHS = [(_inverted_residual, 8), (_odd_resnet, 32), (_pool_into_float_conv, 8)]
PRUNED_CHANNELS = [(16, 30, 40), (18, 32), (12, 20, 36), (20, 6, 32), (5, 16), (8, 24), (4, 8, 12)]
ROME = CpuIdentity("AMD EPYC 7502 32-Core Processor", "AuthenticAMD", ("avx2", "fma"))  # Zen 2: AVX2, no AVX-512


@pytest.mark.parametrize(("build", "bits"), RESIDUAL_GRAPHS)
def test_emulated_residual_graphs_match_ort(build, bits, tmp_path):
    model, shape = build()
    path = tmp_path / "m.onnx"
    onnx.save(precision_forms(model, shape, bits, 0), str(path))
    assert collections.Counter(k.cls for k in emulate(path)) == _ort_kernels(path, tmp_path)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rows, graphs = sweep(n_graphs=3, bits=(32, 4), seed=3, runs=15)
    return write_table(rows, graphs, tmp_path_factory.mktemp("kt") / "table.csv", meta={"cpu": this_cpu().as_dict()})


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


def test_kernel_features_follow_the_block_it_runs_on():
    """A table keeps apart convs whose channels fall on whole NCHWc blocks: blocks of 16 on AVX-512 (a kernel
    made without a block, as every table row was before blocks were recorded), of 8 on AVX2."""
    hw, ci, co = 64, 24, 40
    k16 = Kernel("conv", float(ci * co * 9 * hw), ci * hw, co * hw, ci * co * 9, 3)
    assert k16.features()[9:13] == [8, 8, 0, 0]
    assert dataclasses.replace(k16, block=8).features()[9:13] == [0, 0, 0, 0]
    assert all(k.block == 8 for k in emulate(conv_net((12, 20)), block=8))


def test_a_table_emulates_graphs_for_the_cpu_it_was_measured_on(tmp_path):
    """ORT on an AVX2-only CPU keeps (12, 20, 36) in NCHWc blocks of 8 (one reorder, not two): a table measured
    there predicts the kernels it runs there, whatever this host is; a table with no CPU recorded: blocks of 16."""
    path = tmp_path / "m.onnx"
    onnx.save(conv_net((12, 20, 36)), str(path))
    rows = [{"graph": g, "cls": "conv_nchwc", "macs": m, "in_elems": 64, "out_elems": 16, "w_elems": m // 16, "k": 1,
             "us": us} for g, m, us in (("g0-b32", 1024, 2.0), ("g1-b32", 4096, 5.0), ("g2-b32", 16384, 14.0))]
    graphs = [{"graph": r["graph"], "kernel_sum_us": r["us"], "total_us": r["us"] + 3.0} for r in rows]
    n8, n16 = len(emulate(path, block=8)), len(emulate(path, block=16))
    assert n8 != n16
    for meta, block, n in (({"cpu": ROME.as_dict()}, 8, n8), ({}, 16, n16)):
        table = KernelTable.from_rows(rows, graphs, meta=meta)
        assert table.block == block
        assert KernelLatency(table=table, name="box-kernels").latency(path).details["kernels"] == n


_ORT_GRAPH_CLASSES = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    import onnx
    from lepton_search.latency.host_cpu import session
    from lepton_search.latency.ort_profiler import node_class

    folder = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        def optimized(path):
            session(path, optimized_path=Path(tmp) / "opt.onnx")
            return onnx.load(str(Path(tmp) / "opt.onnx"))

        # the block ORT chose: a 4-channel NCHWc conv's filter is padded to one block of output channels
        probe = optimized(folder / "probe.onnx")
        dims = {i.name: list(i.dims) for i in probe.graph.initializer}
        block = [dims[n.input[1]][0] for n in probe.graph.node if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv"]
        kernels = {}  # file -> [class, weight elements (NCHWc convs: padded to whole blocks)]
        for p in sorted(folder.glob("g-*.onnx")):
            graph = optimized(p).graph
            sizes = {i.name: len(onnx.numpy_helper.to_array(i).ravel()) for i in graph.initializer}
            kernels[p.name] = [[node_class(n), sizes.get(n.input[1], 0) if len(n.input) > 1 else 0] for n in graph.node]
    print(json.dumps({"block": block[0] if block else 1, "kernels": kernels}))
""")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None,
                    reason="needs qemu-x86_64 (apt package qemu-user) to run ORT on an emulated AVX2-only CPU")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs this x86-64 Python under qemu-x86_64")
def test_emulation_follows_ort_on_an_avx2_only_cpu(tmp_path):
    """ORT on a CPU without AVX-512 (QEMU's EPYC-Rome, AVX2) uses NCHWc blocks of 8: its optimized graphs of
    pruned conv stacks, residual graphs and FP32/INT4 convs hold the kernels `emulate(..., block=8)` predicts
    (classes, and NCHWc convs' weights padded to blocks of 8), whatever this host is."""
    models = {f"conv{'_'.join(map(str, c))}-b32": conv_net(c) for c in PRUNED_CHANNELS}
    models |= {f"conv16_32_40-b{b}": quantize.quantize(conv_net((16, 32, 40)), b) for b in (32, 4)}
    for build, bits in RESIDUAL_GRAPHS:
        model, shape = build()
        models[f"{build.__name__}-b{bits}"] = precision_forms(model, shape, bits, 0)
    for name, model in models.items():
        onnx.save(model, str(tmp_path / f"g-{name}.onnx"))
    onnx.save(conv_net((4,)), str(tmp_path / "probe.onnx"))
    run = subprocess.run(["qemu-x86_64", "-cpu", "EPYC-Rome", sys.executable, "-c", _ORT_GRAPH_CLASSES, str(tmp_path)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["block"] == 8, (f"ORT under qemu-x86_64 -cpu EPYC-Rome chose NCHWc block {seen['block']}, not 8: "
                                "the emulated CPU did not hide AVX-512 from it, so this test checks nothing")
    assert len(seen["kernels"]) == len(models)

    def nchwc(kernels: list) -> list:  # NCHWc convs by class and (padded) weight size
        return sorted((c, w) for c, w in kernels if c.endswith("_nchwc"))

    def differ(block: int) -> list[str]:
        out = []
        for f, ort in seen["kernels"].items():
            ours = [(k.cls, k.w_elems) for k in emulate(tmp_path / f, block=block)]
            if collections.Counter(c for c, _ in ours) != collections.Counter(c for c, _ in ort) or nchwc(ours) != nchwc(ort):
                out.append(f)
        return out

    assert differ(8) == []
    assert len(differ(16)) >= 3  # the graphs tell the blocks apart: AVX-512's block mispredicts them
