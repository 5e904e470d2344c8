"""The contract every registered latency target passes (after optuna's `testing/pytest_samplers.py`): built by
name as `search(target=...)` builds it, it times a tiny ONNX file as a positive, finite estimate of its own
source, says more work takes longer, and describes itself by name and source. A target predicting this host
from a table measured here agrees with the measured host on the same file within the factor
`tests/latency/test_kernel_model.py` states (3x for a 3-graph table).

The registry is read with an empty user profile folder: the targets are those the package ships, and one added
to it without an entry in `BUILD` fails `test_every_registered_target_is_covered`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from lepton_search.calibration.kernel_sweep import sweep
from lepton_search.latency import LatencyEstimate, LatencyModel, get_target, list_targets
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.latency.device_profile import BUILTIN_DIR
from lepton_search.latency.host_cpu import HostCpuLatency
from lepton_search.latency.kernel_model import KernelTable
from lepton_search.testing.toy_graphs import mlp_net

SOURCES = ("measured", "predicted", "calibrated")
AGREE_FACTOR = 3.0  # as test_table_predicts_a_measured_graph: a 3-graph table gives the order of magnitude


@pytest.fixture(scope="module")
def host_table() -> KernelTable:
    """A kernel table measured on this host (3 sweep graphs, ~2 s): what `calibrate --kernels` writes."""
    rows, graphs = sweep(n_graphs=3, bits=(32, 4), seed=3, runs=15)
    return KernelTable.from_rows(rows, graphs, meta={"cpu": this_cpu().as_dict()})


# target name -> how the suite builds it (the test's own arguments: fewer timing runs, a table measured here)
BUILD: dict[str, Callable[[KernelTable], LatencyModel]] = {
    "host-cpu": lambda table: get_target("host-cpu", runs=20),
    "host-cpu-kernels": lambda table: get_target("host-cpu-kernels", table=table),
    **{p.stem: (lambda table, name=p.stem: get_target(name)) for p in sorted(BUILTIN_DIR.glob("*.yaml"))},
}
# targets predicting this host's own timings from what was measured here
PREDICTS_THIS_HOST = ("host-cpu-kernels",)


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_PROFILE_DIR", str(tmp_path / "profiles"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("latency_contract")
    out = {}
    for name, widths in (("tiny", (64, 16, 10)), ("big", (512, 1024, 1024, 10))):  # ~1.6k vs ~1.6M MACs
        out[name] = folder / f"{name}.onnx"
        onnx.save(mlp_net(widths), str(out[name]))
    return out


def test_every_registered_target_is_covered():
    assert list_targets() == sorted(BUILD)


@pytest.fixture(params=sorted(BUILD))
def target(request, host_table) -> LatencyModel:
    return BUILD[request.param](host_table)


def test_a_tiny_file_gets_a_positive_finite_estimate_of_the_targets_source(target, files):
    est = target.latency(files["tiny"])
    assert isinstance(est, LatencyEstimate) and est.source == target.source in SOURCES
    assert 0 < est.p50_ms <= est.p90_ms and math.isfinite(est.p90_ms), est
    assert est.batch_size == 1  # no inputs: batch 1 (graph_inputs)
    assert est.expected_error_pct is None or est.expected_error_pct >= 0


def test_more_work_takes_longer(target, files):
    """A thousand times the multiply-adds: slower on every target, measured or predicted."""
    assert target.latency(files["big"]).p50_ms > target.latency(files["tiny"]).p50_ms


def test_describe_names_the_target_and_its_source_as_json(target, request):
    described = target.describe()
    assert (described["name"], described["source"]) == (request.node.callspec.params["target"], target.source)
    assert json.loads(json.dumps(described)) == described  # stored with the study as it is


@pytest.mark.parametrize("name", PREDICTS_THIS_HOST)
def test_a_prediction_for_this_host_agrees_with_the_measured_host(name, host_table, files):
    predicted = BUILD[name](host_table).latency(files["tiny"]).p50_ms
    measured = HostCpuLatency(runs=30).latency(files["tiny"]).p50_ms
    assert 1 / AGREE_FACTOR < predicted / measured < AGREE_FACTOR, (predicted, measured)
