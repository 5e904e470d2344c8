"""Drill: a flipped byte in a stored model.onnx and a truncated checkpoint, in a real digits-mlp study."""

from __future__ import annotations

import logging

import pytest

from lepton_search import SearchSpace, load, search
from lepton_search.faults import DigestMismatch

pytestmark = pytest.mark.slow


def test_flipped_onnx_refused_and_truncated_checkpoint_retrained(tmp_path, caplog):
    url, art = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "art"
    space = SearchSpace(prune_ratio=(0.0, 0.5), bits=(32,), finetune_epochs=(1, 2), anchors="off", trials=2)
    result = search("digits-mlp", space, n_trials=1, storage=url, study_name="rot", artifacts=art,
                    remeasure=False, verbose=False)
    done = next(t for t in result.study.trials if t.state.name == "COMPLETE")
    onnx = art / done.user_attrs["onnx_artifact_id"]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match=done.user_attrs["onnx_artifact_id"]):
        load(url, "rot", artifacts=art).export(done.number, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()

    from lepton_search.techniques.checkpoints import CheckpointStore

    cut = sorted((art / "checkpoints").glob("*/epoch*.pt"))
    assert cut, "the trial fine-tuned, so it stored a checkpoint"
    for ck in cut:
        ck.write_bytes(ck.read_bytes()[:-64])  # cut short, as by a copy that ran out of room
    store = CheckpointStore(art / "checkpoints")
    with caplog.at_level(logging.WARNING, logger="lepton_search"):
        assert all(store.latest(ck.parent.name, upto=2) is None for ck in cut)  # refused: retrained, not trusted
    assert sum("SHA-256" in r.getMessage() for r in caplog.records) == len(cut)
    assert not any(ck.exists() for ck in cut)
    again = search("digits-mlp", space, n_trials=2, storage=url, study_name="rot", artifacts=art,
                   remeasure=False, verbose=False)  # the study goes on
    assert sum(t.state.name == "COMPLETE" for t in again.study.trials) == 2
