"""Fine-tuning reuse: resuming from a stored epoch equals training straight; bad checkpoints are retrained."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import numpy_helper

from lepton_search import candidate
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.techniques.checkpoints import CheckpointStore
from lepton_search.testing.artifacts import DictArtifactStore

SETTINGS = FinetuneSettings(subset_size=400, batch_size=64, bn_batches=4, calibration_size=16)


def _weights(path) -> list:
    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]


def _compress(workload, config, path, store=None):
    return candidate.compress(workload, config, path, settings=SETTINGS, seed=3, checkpoints=store, horizon=3)


@pytest.mark.parametrize("bits", [32, 8])  # 8: quantization-aware, the fake-quant ranges are resumed too
def test_resume_from_epoch_1_equals_two_epochs_straight(digits_mlp, tmp_path, bits):
    """Tolerance: 1e-5 absolute on every weight (same ops in the same order on the CPU; the INT8 file's
    integer weights and scales must match exactly up to that)."""
    torch.set_num_threads(1)  # reductions in a fixed order
    config1, config2 = CompressionConfig(0.25, bits, 1), CompressionConfig(0.25, bits, 2)
    straight = _compress(digits_mlp, config2, tmp_path / "straight.onnx")
    store = CheckpointStore(tmp_path / "ckpt")
    first = _compress(digits_mlp, config1, tmp_path / "e1.onnx", store)
    resumed = _compress(digits_mlp, config2, tmp_path / "e2.onnx", store)
    assert first.finetune_epochs_reused == 0 and resumed.finetune_epochs_reused == 1
    assert straight.finetune_epochs_reused == 0  # no store: both epochs trained
    assert resumed.finetune_seconds_total > resumed.finetune_seconds  # the reused epoch's recorded time counts
    for a, b in zip(_weights(straight.onnx_path), _weights(resumed.onnx_path), strict=True):
        assert a.shape == b.shape
        assert abs(a.astype("float64") - b.astype("float64")).max() <= 1e-5 * max(1.0, abs(a).max())


def test_full_reuse_trains_nothing_and_bits_share_float_checkpoints(digits_mlp, tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    _compress(digits_mlp, CompressionConfig(0.25, 32, 2), tmp_path / "a.onnx", store)
    again = _compress(digits_mlp, CompressionConfig(0.25, 16, 2), tmp_path / "b.onnx", store)  # same float training
    assert again.finetune_epochs_reused == 2 and again.finetune_seconds == 0.0
    qat = _compress(digits_mlp, CompressionConfig(0.25, 8, 2), tmp_path / "c.onnx", store)  # trains under INT8 noise
    assert qat.finetune_epochs_reused == 0


def test_reuse_works_in_a_store_that_is_not_a_folder(digits_mlp, tmp_path):
    """An S3-like store (Optuna's artifact protocol, no folder) keeps checkpoints: the second trial trains nothing."""
    fake = DictArtifactStore()
    store = CheckpointStore(fake, prefix="checkpoints/")
    _compress(digits_mlp, CompressionConfig(0.25, 32, 2), tmp_path / "a.onnx", store)
    again = _compress(digits_mlp, CompressionConfig(0.25, 16, 2), tmp_path / "b.onnx", store)
    assert again.finetune_epochs_reused == 2 and again.finetune_seconds == 0.0
    assert sorted(k.rsplit("/", 1)[1] for k in fake.objects) == ["epoch1.pt", "epoch2.pt"]


def test_corrupt_or_mismatched_checkpoint_is_retrained(digits_mlp, tmp_path):
    store = CheckpointStore(tmp_path / "ckpt")
    _compress(digits_mlp, CompressionConfig(0.25, 32, 1), tmp_path / "a.onnx", store)
    (path,) = list((tmp_path / "ckpt").glob("*/epoch1.pt"))
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash mid-copy
    again = _compress(digits_mlp, CompressionConfig(0.25, 32, 1), tmp_path / "b.onnx", store)
    assert again.finetune_epochs_reused == 0 and again.finetune_seconds > 0
    key = path.parent.name
    epoch, payload = store.latest(key, upto=1)  # rewritten whole, and sealed again
    assert epoch == 1
    store.save("someone-else", 1, payload)  # a sound file of another key, copied over this one
    (tmp_path / "ckpt" / "someone-else" / "epoch1.pt").replace(path)
    assert store.latest(key, upto=1) is None and not path.exists()


def test_store_evicts_least_recently_used_beyond_its_cap(tmp_path):
    store = CheckpointStore(tmp_path, max_mb=0.25)
    for i in range(4):
        store.save(f"k{i}", 1, {"blob": torch.zeros(25_000)})  # ~0.1 MB each
    assert len(list(tmp_path.glob("*/epoch1.pt"))) == 2
    assert store.latest("k3", upto=1) is not None and store.latest("k0", upto=1) is None


def test_a_search_never_trains_the_same_epoch_twice(digits_mlp, sqlite_url, tmp_path):
    import optuna

    from lepton_search import SearchSpace, search

    # early_reject off: an fp32 trial at the base's accuracy would reject the slower fp16 ones before training
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(32, 16), finetune_epochs=(1, 2), trials=4,
                        finetune=SETTINGS, early_reject="off")
    study = optuna.create_study(storage=sqlite_url, study_name="reuse", directions=space.directions)
    for bits, epochs in ((32, 1), (32, 2), (16, 2), (16, 1)):
        study.enqueue_trial({"bits": bits, "finetune_epochs": epochs})
    result = search(digits_mlp, space, n_trials=4, storage=sqlite_url, study_name="reuse", verbose=False,
                    callbacks=[], artifacts=tmp_path / "art", remeasure=False)
    reused = [r.finetune_epochs_reused for _, r in sorted(result.records().items())]
    assert reused == [0, 1, 2, 1]  # 2 epochs trained in all, not 1 + 2 + 2 + 1
    assert list((tmp_path / "art" / "checkpoints").glob("*/epoch2.pt"))
