"""A tiny LSTM token classifier through `lepton_search.search`: prune hidden units -> fine-tune -> INT8 -> export ->
ONNX Runtime accuracy equal to the stored one -> latency timed on real int64 samples."""

from __future__ import annotations

import numpy as np
import onnx
import optuna
import pytest
import torch
from rnn_workload import lstm_workload

from lepton_search import SearchSpace, search
from lepton_search.evaluate import onnx_accuracy
from lepton_search.space import FinetuneSettings, LatencySettings


@pytest.mark.slow  # a real 4-trial search (~20 s on one idle thread)
def test_tiny_lstm_search_prunes_quantizes_and_stores_what_onnxruntime_gives(tmp_path):
    torch.set_num_threads(1)
    wl = lstm_workload()
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), round_to=8, bits=(32, 8), finetune_epochs=(0, 1),
                        sampler="random", seed=3, early_reject="off",
                        finetune=FinetuneSettings(subset_size=256, batch_size=64, lr=0.05),
                        latency=LatencySettings(warmup=2, runs=20))
    result = search(wl, space, n_trials=5, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="lstm", verbose=False)
    complete = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 5
    seen = set()
    for t in complete:
        path = result.export(t.number, tmp_path / f"t{t.number}")
        fresh = onnx_accuracy(path, wl, "val")
        assert fresh.correct == t.user_attrs["val_correct"] and fresh.accuracy == t.user_attrs["accuracy"]
        graph = onnx.load(str(path))
        ops = {n.op_type for n in graph.graph.node}
        cfg = t.user_attrs["config"]
        assert ("DynamicQuantizeLSTM" in ops) == (cfg["bits"] == 8) and ("LSTM" in ops) == (cfg["bits"] == 32)
        lstm = next(n for n in graph.graph.node if "LSTM" in n.op_type)
        hidden = next(a.i for a in lstm.attribute if a.name == "hidden_size")
        assert hidden == (16 if cfg["prune_ratio"] == 0.5 else 32)
        assert t.user_attrs["latency_ms"] > 0 and t.user_attrs["accuracy"] > 0.8
        samples = np.load(path.parent / "sample_inputs.npz")
        assert samples["input_ids"].dtype == np.int64 and samples["input_ids"].shape[1] == 12
        seen.add((cfg["prune_ratio"], cfg["bits"]))
    assert (0.5, 8) in seen, seen  # a pruned INT8 candidate went through
