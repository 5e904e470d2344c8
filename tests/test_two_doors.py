"""The two front doors build the same file: `ModelOptimizer.compress(**knobs)` and the search trial of the same
config run the same checks, the same stages, the same teacher and the same measurement."""

from __future__ import annotations

import hashlib

import onnx
import optuna
import pytest
import torch
from onnx import numpy_helper

from lepton_search import ModelOptimizer, SearchSpace, search, workloads
from lepton_search.errors import ConfigError
from lepton_search.space import FinetuneSettings, LatencySettings


def weights_digest(path) -> str:
    """SHA-256 of a file's initializers, in graph order (the file's bytes also hold names and a producer)."""
    digest = hashlib.sha256()
    for init in onnx.load(str(path)).graph.initializer:
        digest.update(init.name.encode())
        digest.update(numpy_helper.to_array(init).tobytes())
    return digest.hexdigest()


@pytest.mark.slow  # a 3-layer MiniLM slice at 32 tokens on 200 articles: two 1-epoch fine-tunings (~1.5 min)
def test_model_optimizer_gives_the_search_trials_file_and_figures_on_bbc_minilm(tmp_path):
    torch.set_num_threads(1)
    wl = workloads.get("bbc-minilm", num_layers=3, seq_len=32, limit=200, verbose=False)
    settings = FinetuneSettings(subset_size=64, batch_size=16, calibration_size=8)
    knobs = {"prune_ratio": 0.0, "bits": 8, "finetune_epochs": 1, "seq_len": 16, "layers": 2}
    opt = ModelOptimizer(None, wl, out_dir=tmp_path / "opt", settings=settings, verbose=False)
    door = opt.compress(**knobs)

    space = SearchSpace(knobs=knobs, finetune=settings, anchors="off", early_reject="off",
                        latency=LatencySettings(warmup=2, runs=20))
    result = search(wl, space, n_trials=1, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="door",
                    verbose=False, callbacks=[])
    (trial,) = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    path = result.export(trial.number, tmp_path / "trial")
    assert weights_digest(path) == weights_digest(door.onnx_path)  # the same file
    assert door.candidate.config.as_dict() == trial.user_attrs["config"]
    assert door.candidate.inputs == tuple(trial.user_attrs["inputs"])  # 16-token inputs on both
    after = door.table.loc["after"]
    assert after["accuracy"] == trial.user_attrs["accuracy"]  # accuracy of the same file on the same cut batches
    assert after["params"] == trial.user_attrs["params"] and after["macs"] == trial.user_attrs["macs"]
    with pytest.raises(ConfigError, match="knobs.seq_len: got 64; is above the model's 32 tokens"):
        opt.compress(seq_len=64)
    with pytest.raises(ConfigError, match="knobs.layers: got 4; is more than the model's 3 encoder layers"):
        opt.compress(layers=4)
