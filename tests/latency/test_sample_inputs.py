"""sample_inputs.npz: real validation samples beside a model, what `measure` times it on (torch-free)."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import numpy as np
import torch
from token_workload import TinyTokenClassifier, token_data
from torch import nn

from lepton_search.latency import SAMPLE_INPUTS_FILE, load_inputs, save_inputs
from lepton_search.latency.measure import feeds_for
from lepton_search.techniques import export

NAMES = ["input_ids", "attention_mask"]


def _token_folder(tmp_path):
    torch.manual_seed(0)
    ids, mask, _ = token_data(8, seed=3)
    export.to_onnx(TinyTokenClassifier(), (ids[:1], mask[:1]), tmp_path / "model.onnx", names=NAMES)
    save_inputs(tmp_path / SAMPLE_INPUTS_FILE, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    return ids.numpy(), mask.numpy()


def test_npz_round_trip_keeps_names_dtypes_and_values(tmp_path):
    ids, mask = _token_folder(tmp_path)
    back = load_inputs(tmp_path / SAMPLE_INPUTS_FILE)
    assert list(back) == NAMES and back["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(back["input_ids"], ids)
    np.testing.assert_array_equal(back["attention_mask"], mask)


def test_measure_feeds_the_saved_samples_to_the_graph_they_fit(tmp_path):
    ids, _ = _token_folder(tmp_path)
    export.to_onnx(nn.Linear(4, 2), torch.randn(1, 4), tmp_path / "other.onnx")  # input named "input"
    feeds, source = feeds_for(tmp_path / "model.onnx")
    assert source == SAMPLE_INPUTS_FILE
    np.testing.assert_array_equal(feeds["input_ids"], ids)
    assert feeds_for(tmp_path / "other.onnx")[1] == "synthetic"  # the folder's samples name other inputs
    save_inputs(tmp_path / f"other.{SAMPLE_INPUTS_FILE}", {"input": np.ones((3, 4), np.float32)})
    assert feeds_for(tmp_path / "other.onnx")[1] == f"other.{SAMPLE_INPUTS_FILE}"


def test_measure_cli_runs_without_torch_on_multi_input_samples(tmp_path):
    _token_folder(tmp_path)
    out = tmp_path / "m.csv"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        from lepton_search.latency.measure import main
        main([{str(tmp_path)!r}, "--out", {str(out)!r}, "--runs", "5", "--batch-size", "4"])
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert row["file"] == "model.onnx" and row["inputs"] == SAMPLE_INPUTS_FILE and row["batch_size"] == "4"
    assert float(row["p50_ms"]) > 0


def test_kernel_profiling_feeds_every_input(tmp_path):
    from lepton_search.latency.measure import kernels_csv_path, measure_dir

    _token_folder(tmp_path)
    rows = measure_dir(tmp_path, tmp_path / "m.csv", runs=20, warmup=1, kernels=True, verbose=False)
    assert [r["inputs"] for r in rows] == [SAMPLE_INPUTS_FILE]
    kernels = list(csv.DictReader(kernels_csv_path(tmp_path / "m.csv").open()))
    assert {"Gather", "MatMul"} <= {k["op"] for k in kernels}  # the embedding look-up and attention ran
