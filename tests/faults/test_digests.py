"""Files rot: every artifact and checkpoint is checked against the SHA-256 recorded when it was written."""

from __future__ import annotations

import io
import logging

import optuna
import pytest
import torch

from lepton_search import records
from lepton_search.faults import DigestMismatch
from lepton_search.storage import FolderArtifactStore, TrialFiles
from lepton_search.techniques.checkpoints import CheckpointStore


def _flip(path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_an_artifact_is_checked_against_its_recorded_digest(tmp_path):
    files = TrialFiles(FolderArtifactStore(tmp_path / "art"))
    study = optuna.create_study()
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx bytes " * 100)
    trial = study.ask()
    artifact_id = files.upload(trial, src)
    assert records.artifact_digest(artifact_id, trial) is not None
    assert files.download(artifact_id, tmp_path / "ok.onnx", owners=(trial,)).read_bytes() == src.read_bytes()

    _flip(tmp_path / "art" / artifact_id)
    with pytest.raises(DigestMismatch) as err:
        files.download(artifact_id, tmp_path / "bad.onnx", owners=(trial, study))
    message = str(err.value)
    assert message.startswith("artifact: got ") and artifact_id in message and "\n" not in message
    assert not (tmp_path / "bad.onnx").exists()  # never left where a caller could read it

    # a study written before digests: nothing recorded, read as it is (unchecked)
    assert files.download(artifact_id, tmp_path / "old.onnx", owners=()).is_file()


def test_a_study_file_digest_is_found_from_a_trial_that_points_at_it(tmp_path):
    files = TrialFiles(FolderArtifactStore(tmp_path / "art"))
    study = optuna.create_study()
    samples = tmp_path / "sample_inputs.npz"
    samples.write_bytes(b"samples")
    samples_id = files.upload(study, samples)  # the base's samples, recorded on the study
    trial = study.ask()
    records.set_artifact(trial, records.SAMPLE_INPUTS_ARTIFACT, samples_id)
    (tmp_path / "art" / samples_id).write_bytes(b"sampler")  # same length, other bytes
    with pytest.raises(DigestMismatch):
        files.download_trial_file(trial, records.SAMPLE_INPUTS_ARTIFACT, tmp_path / "s.npz", study=study)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_checkpoint_whose_bytes_changed_is_retrained_not_trusted(tmp_path, caplog, damage):
    store = CheckpointStore(tmp_path / "ck")
    store.save("k", 1, {"w": torch.arange(4.0)})
    store.save("k", 2, {"w": torch.arange(4.0) * 2})
    path = tmp_path / "ck" / "k" / "epoch2.pt"
    if damage == "flip":
        _flip(path)  # torch may well still load it: the digest is what refuses it
    else:
        path.write_bytes(path.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="lepton_search"):
        epoch, payload = store.latest("k", upto=2)
    assert epoch == 1 and torch.equal(payload["w"], torch.arange(4.0))  # the good epoch; epoch 2 retrains
    assert not path.exists()
    assert any("epoch2.pt" in r.getMessage() and "SHA-256" in r.getMessage() for r in caplog.records)


def test_a_checkpoint_written_before_digests_still_loads(tmp_path):
    store = CheckpointStore(tmp_path / "ck")
    (tmp_path / "ck" / "k").mkdir(parents=True)
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2), "key": "k", "epoch": 1}, buffer)
    (tmp_path / "ck" / "k" / "epoch1.pt").write_bytes(buffer.getvalue())  # no header: the old format
    assert store.latest("k", upto=1)[0] == 1
