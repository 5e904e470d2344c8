"""`bbc-minilm`: registered by name, a one-line error naming the extra without it, a tiny real version."""

from __future__ import annotations

import sys

import onnx
import pytest
import torch

from lepton_search import workloads
from lepton_search.errors import ConfigError


def test_registered_by_name():
    assert "bbc-minilm" in workloads.list_workloads("bbc-*")


def test_without_transformers_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("LEPTON_SEARCH_CACHE", str(tmp_path))  # nothing tokenized yet: the tokenizer is needed
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lepton-search\[nlp\]'"):
        workloads.get("bbc-minilm")


@pytest.mark.slow  # tokenizes BBC News once (~10 s), a linear probe on a 2-layer slice (~5 s)
def test_tiny_version_is_a_valid_two_input_workload():
    torch.set_num_threads(1)
    wl = workloads.get("bbc-minilm", num_layers=2, seq_len=16, limit=200, verbose=False)
    wl.validate()
    assert [(s.name, s.dtype, s.shape) for s in wl.inputs] == [("input_ids", "int64", (16,)),
                                                                ("attention_mask", "int64", (16,))]
    assert wl.seq_len == 16
    assert wl.info["layers"] == 2 and wl.info["train"] == wl.info["val"] == wl.info["test"] == 200
    feeds = wl.sample_inputs(4)
    assert sorted(feeds) == ["attention_mask", "input_ids"] and feeds["input_ids"].shape == (4, 16)


@pytest.mark.slow  # a real 4-trial search of a 2-layer MiniLM slice at 16 tokens (~1.5 min on one idle thread)
def test_tiny_minilm_search_stores_the_accuracy_onnxruntime_gives_its_artifact(tmp_path):
    import optuna

    from lepton_search import SearchSpace, search
    from lepton_search.evaluate import onnx_accuracy
    from lepton_search.space import FinetuneSettings, LatencySettings

    torch.set_num_threads(1)
    wl = workloads.get("bbc-minilm", num_layers=2, seq_len=16, limit=96, verbose=False)
    # 4 configs, 4 trials: every one runs (a repeated suggestion is skipped, not counted); SGD at 0.002, as the
    # pretrained encoder needs (0.02 fell to chance on the pruned model)
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(8,), finetune_epochs=(0, 1), sampler="random", seed=2,
                        early_reject="off", finetune=FinetuneSettings(subset_size=48, batch_size=16, lr=0.002),
                        latency=LatencySettings(warmup=2, runs=20))
    result = search(wl, space, n_trials=4, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="minilm",
                    verbose=False)
    complete = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    seen = set()
    for t in complete:
        path = result.export(t.number, tmp_path / f"t{t.number}")
        fresh = onnx_accuracy(path, wl, "val")
        assert fresh.correct == t.user_attrs["val_correct"]
        assert fresh.accuracy == t.user_attrs["accuracy"]
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        cfg = t.user_attrs["config"]
        assert "MatMulInteger" in ops  # ONNX Runtime's dynamic INT8 (the graph's inputs are token ids)
        if cfg["prune_ratio"] > 0:
            assert t.user_attrs["params_ratio"] < 1  # heads and FFN channels left the graph
        seen.add((cfg["prune_ratio"] > 0, cfg["bits"], cfg["finetune_epochs"]))
    assert seen == {(False, 8, 0), (False, 8, 1), (True, 8, 0), (True, 8, 1)}


def test_migrate_starts_minilm_from_its_pretrained_encoder_with_a_new_head():
    from lepton_search import migrate
    from lepton_search.workloads.minilm import load_encoder

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (24, 8), generator=gen)
    mask = torch.ones(24, 8, dtype=torch.int64)
    labels = torch.arange(24) % 3
    data = {"train": (ids[:16], mask[:16], labels[:16]), "val": (ids[16:], mask[16:], labels[16:])}
    wl = migrate("minilm-l6", data, num_classes=3, epochs=1, freeze_backbone_epochs=1, batch_size=8, verbose=False)
    assert wl.model.head.out_features == 3
    pretrained = load_encoder().state_dict()
    got = wl.model.encoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in pretrained.items())  # one frozen epoch: the encoder as shipped
    with torch.no_grad():
        assert wl.model(ids[:2], mask[:2]).shape == (2, 3)
