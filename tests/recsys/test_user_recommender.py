"""A user's own nn.Embedding recommender through the public API, with task="ranking" and "binary": the embedding
knobs act on it (smaller file, row-wise tables in it), the front and the card show HR@k / AUC."""

from __future__ import annotations

import onnx
import pytest
import torch
from rec_workload import CANDIDATES, trained_workload

import lepton_search as ls
from lepton_search.latency import HostCpuLatency


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ranking", "binary"])
def test_a_users_recommender_searches_with_the_embedding_knobs(task, sqlite_url, tmp_path):
    wl = trained_workload(task=task)
    space = ls.SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 1), embedding_bits=(32, 8, 4),
                           embedding_dim=(0.5, 1.0, 0.5), objectives=("accuracy", "latency_ms", "size_mb"),
                           max_metric_drop=20.0, finetune=ls.FinetuneSettings(subset_size=2000, batch_size=64, lr=0.01))
    result = ls.search(wl, space, n_trials=5, storage=sqlite_url, study_name=f"rec-{task}", verbose=False,
                       target=HostCpuLatency(batch_size=CANDIDATES, runs=20), remeasure=False)
    trials = result.trials()
    done = trials[trials["state"] == "COMPLETE"]
    assert {"embedding_bits", "embedding_dim"} <= set(done.columns)
    assert result.base.task["task"] == task and result.base.task["metric"] == ("hr@10" if task == "ranking" else "auc")
    four = done[done["embedding_bits"] == 4]
    assert len(four), "the anchors evaluate INT8 with 4-bit tables first"
    row = four.iloc[0]
    eight = done[(done["embedding_bits"] == 8) & (done["bits"] == row["bits"]) & (done["prune_ratio"] == 0)
                 & (done["embedding_dim"] == 1.0) & (done["finetune_epochs"] == 0)].iloc[0]
    # the two anchors differ in the tables alone: 4 bits a value instead of 8, so half a byte a table entry less
    entries = sum(m.weight.numel() for m in wl.model.modules() if isinstance(m, torch.nn.Embedding))
    assert round((eight["size_mb"] - row["size_mb"]) * 1e6) == entries // 2
    assert eight["size_mb"] < 0.6 * result.base.size_mb
    path = result.export(int(row["number"]), tmp_path / "deploy")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GatherBlockQuantized" in ops and "Gather" not in ops
    card = (tmp_path / "deploy" / "MODEL_CARD.md").read_text()
    assert ("hr@10" if task == "ranking" else "auc") in card.lower()


@pytest.mark.slow
def test_model_optimizer_applies_the_embedding_knobs_to_a_users_model(tmp_path):
    wl = trained_workload(task="ranking")
    opt = ls.ModelOptimizer(wl.model, wl, out_dir=tmp_path, target=HostCpuLatency(batch_size=CANDIDATES, runs=20))
    model, path, table = opt.compress(bits=32, finetune_epochs=0, embedding_bits=4, embedding_dim=0.5)
    assert model is None  # the file holds 4-bit tables: no torch model runs it as it is
    assert table.loc["after", "size_mb"] < 0.5 * table.loc["before", "size_mb"]  # the MLP (FP32 here) is 40%
    assert list(table.columns[:3]) == ["config", "hr@10", "test_hr@10"]
    assert table.loc["after", "hr@10"] >= table.loc["before", "hr@10"] - 0.1
    tables = {i.name: list(i.dims) for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_q4")}
    assert tables["user_gmf.weight_q4"] == [40, 4]  # 16 columns -> 8 kept -> 4 bytes a row
