"""One typed store for a study's files; fine-tuning checkpoints in any store Optuna's artifact API reaches."""

from __future__ import annotations

import io

import optuna
import pytest
import torch

from lepton_search.storage import FolderArtifactStore, TrialFiles, checkpoint_store
from lepton_search.techniques.checkpoints import CheckpointStore
from lepton_search.testing.artifacts import DictArtifactStore


def test_checkpoints_live_in_a_store_that_is_not_a_folder():
    fake = DictArtifactStore()
    store = checkpoint_store(TrialFiles(fake))
    assert isinstance(store, CheckpointStore)
    assert store.latest("k", upto=3) is None
    store.save("k", 2, {"w": torch.arange(3.0)})
    assert list(fake.objects) == ["checkpoints/k/epoch2.pt"]
    epoch, payload = store.latest("k", upto=3)
    assert epoch == 2 and torch.equal(payload["w"], torch.arange(3.0))
    fake.objects["checkpoints/k/epoch2.pt"] = fake.objects["checkpoints/k/epoch2.pt"][:50]  # torn, as by a crash
    assert store.latest("k", upto=3) is None and not fake.objects  # deleted, never trusted
    assert store.evict() == []  # a store that cannot list its files is not capped


def test_a_folder_store_keeps_checkpoints_where_they_always_were(tmp_path):
    files = TrialFiles(FolderArtifactStore(tmp_path))
    files.checkpoints().save("k", 1, {"w": torch.zeros(2)})
    assert (tmp_path / "checkpoints" / "k" / "epoch1.pt").is_file()
    assert CheckpointStore(tmp_path / "checkpoints").latest("k", upto=1)[0] == 1  # the same files, read bare
    assert files.describe() == str(tmp_path.resolve())


def test_folder_writes_are_atomic(tmp_path):
    store = FolderArtifactStore(tmp_path)
    store.write("a/x.bin", io.BytesIO(b"old"))

    class Broken(io.BytesIO):
        def read(self, *args):
            raise OSError("disk gone mid-copy")

    with pytest.raises(OSError):
        store.write("a/x.bin", Broken())
    with store.open_reader("a/x.bin") as fh:
        assert fh.read() == b"old"  # the old file whole, no temporary file left
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.bin"]
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("a/missing.bin")
    with pytest.raises(ValueError):
        store.write("../escape.bin", io.BytesIO(b""))


def test_trial_files_upload_and_record_each_file(tmp_path):
    fake = DictArtifactStore()
    files = TrialFiles(fake)
    study = optuna.create_study()
    trial = study.ask()
    for name in ("model.onnx", "sample_inputs.npz", "config.json", "MODEL_CARD.md"):
        (tmp_path / name).write_bytes(name.encode())
    ids = [files.upload_onnx(trial, tmp_path / "model.onnx"), files.upload_samples(trial, tmp_path / "sample_inputs.npz"),
           files.upload_config(trial, tmp_path / "config.json"), files.upload_card(trial, tmp_path / "MODEL_CARD.md")]
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert [frozen.user_attrs[k] for k in ("onnx_artifact_id", "sample_inputs_artifact_id", "config_artifact_id",
                                           "card_artifact_id")] == ids
    from lepton_search.records import ONNX_ARTIFACT
    assert files.download_trial_file(frozen, ONNX_ARTIFACT, tmp_path / "back.onnx").read_bytes() == b"model.onnx"
    assert files.describe() == "s3://fake-bucket" and TrialFiles.of(files) is files
