"""Fine-tuning reuse: epoch checkpoints of a pruned model, shared by every trial (and worker) of a study.

Epochs are cumulative: a trial with e epochs resumes from the checkpoint of the same pruned model at the
largest e' <= e and trains only the rest, so a study never trains the same epoch twice. A checkpoint holds
what makes "e' then resume to e" equal "e straight": the weights, the optimizer and scheduler state (the
schedule spans the space's maximum epochs), the loader's generator, the INT8 fake-quant input ranges, and
the seconds spent so far. It is taken before the post-training BatchNorm re-estimation.

The key covers the base weights, the prune settings, quantization-awareness, the seed, the fine-tune
settings and the schedule horizon. Checkpoints live in any store with Optuna's artifact protocol
(`open_reader`, `write`, `remove`): a study's folder (`storage.FolderArtifactStore`, or a bare folder here), an
S3 bucket (`Boto3ArtifactStore`), GCS, or a user's own. Each is written whole in one `write` (a folder writes a
temporary file and renames it; an S3 or GCS object appears whole or not at all); a store that can list its files
(a folder) is capped in size, least recently used evicted first (an object store: its lifecycle rules); a
checkpoint that does not load or does not match its key is deleted and retrained, never trusted.

Each file starts with the SHA-256 of the rest, written with it (`_seal`): a checkpoint whose bytes changed since
(truncated, a flipped bit) is refused by its digest, with a warning naming the file, and retrained, even when
torch could still load it. Files written before the digest existed have no header and are loaded unchecked (the
load and the key check still guard them). A full disk when saving evicts the other checkpoints and tries once
more; a checkpoint that still does not fit is skipped (the trial goes on: checkpoints only save time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import torch
from torch import nn

from lepton_search.faults import is_disk_full
from lepton_search.logging import logger
from lepton_search.paths import AtomicFolder, file_lock

_MAGIC = b"LEPTONCKPT1\n"  # then 32 bytes of SHA-256 of the torch.save bytes that follow


def _seal(body: bytes) -> bytes:
    return _MAGIC + hashlib.sha256(body).digest() + body


def _unseal(data: bytes) -> bytes | None:
    """The torch.save bytes of a stored checkpoint; None when its digest does not match. A file with no header
    (written before digests) is returned as it is: nothing was recorded to check it against."""
    if not data.startswith(_MAGIC):
        return data
    head = len(_MAGIC)
    digest, body = data[head:head + 32], data[head + 32:]
    return body if hashlib.sha256(body).digest() == digest else None


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's weights and buffers (what the base model is, for checkpoint keys)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


class ArtifactStoreLike(Protocol):
    """Optuna's artifact-store protocol (`optuna.artifacts` stores, and any user store Optuna accepts)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


@runtime_checkable
class _Listing(Protocol):
    """What a store offers beyond Optuna's protocol for a size cap (a folder: `paths.AtomicFolder`)."""

    folder: Path

    def entries(self, prefix: str) -> list[tuple[str, int, float]]: ...

    def touch(self, artifact_id: str) -> None: ...


class CheckpointStore:
    """Epoch checkpoints as `<prefix><key>/epoch<e>.pt` in an artifact store, at most `max_mb` in all where the
    store can list its files. `store`: a folder (its files are `<key>/epoch<e>.pt`) or any store with Optuna's
    artifact protocol; `storage.checkpoint_store` gives a study's, under `checkpoints/`.

    Example:
        >>> store = CheckpointStore("lepton_search_artifacts/checkpoints")  # doctest: +SKIP
        >>> store.latest(key, upto=2)  # (epoch, payload) or None  # doctest: +SKIP
    """

    def __init__(self, store: str | Path | ArtifactStoreLike, *, prefix: str = "", max_mb: float = 2048.0,
                 lock_dir: str | Path | None = None) -> None:
        self.store = AtomicFolder(store) if isinstance(store, (str, Path)) else store
        self.prefix, self.max_mb = prefix, max_mb
        if lock_dir is None:  # beside the files in a folder; a store with none: this host's temporary folder
            lock_dir = (self.store.folder / prefix if isinstance(self.store, _Listing)
                        else Path(tempfile.gettempdir()) / "lepton_checkpoint_locks")
        self.lock_dir = Path(lock_dir)

    @staticmethod
    def key(**parts: Any) -> str:
        """A stable key for the things that must match for a checkpoint to be reused."""
        text = json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in parts.items()},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold `key` while looking up and training it: a second worker on the same pruned model waits, then
        resumes from what the first stored instead of training the same epochs again. (flock: workers that
        share a folder store on one host or a local-lock-aware filesystem; other stores: workers on one host.)"""
        return file_lock(self.lock_dir / key / ".lock")

    def artifact_id(self, key: str, epoch: int) -> str:
        return f"{self.prefix}{key}/epoch{epoch}.pt"

    def latest(self, key: str, *, upto: int) -> tuple[int, dict] | None:
        """The checkpoint of `key` at the largest epoch <= `upto`; a bad one is deleted and skipped."""
        for epoch in range(upto, 0, -1):
            artifact_id = self.artifact_id(key, epoch)
            try:
                with self.store.open_reader(artifact_id) as reader:
                    data = reader.read()
            except Exception:  # noqa: BLE001, S112 - ArtifactNotFound, FileNotFoundError, a store's own "no such key"
                continue
            body = _unseal(data)
            if body is None:
                logger.warning(f"checkpoint {self._where(artifact_id)}: its bytes do not match the SHA-256 written "
                               "with it (truncated or changed on disk); not trusted: deleted, the epochs retrain")
                with contextlib.suppress(Exception):
                    self.store.remove(artifact_id)
                continue
            try:
                payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
                if payload.get("key") != key or payload.get("epoch") != epoch:
                    raise ValueError("checkpoint does not match its key")
            except Exception:  # noqa: BLE001 - truncated, corrupt or foreign: retrain, never trust it
                with contextlib.suppress(Exception):
                    self.store.remove(artifact_id)
                continue
            if isinstance(self.store, _Listing):
                self.store.touch(artifact_id)  # recently used: evicted last
            return epoch, payload
        return None

    def save(self, key: str, epoch: int, payload: dict) -> str | None:
        """Store the checkpoint of `key` at `epoch` in one write, sealed with its SHA-256; returns its artifact id,
        or None when the disk is full even after evicting every other checkpoint (skipped, with a warning)."""
        buffer = io.BytesIO()
        torch.save({**payload, "key": key, "epoch": epoch}, buffer)
        sealed = _seal(buffer.getvalue())
        artifact_id = self.artifact_id(key, epoch)
        for attempt in range(2):
            try:  # whole: a folder renames a temporary file, S3 / GCS put one object
                self.store.write(artifact_id, io.BytesIO(sealed))
                break
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                freed = self.evict(max_mb=0.0, keep=key) if attempt == 0 else []
                if not freed:
                    logger.warning(f"checkpoint {self._where(artifact_id)}: no space left on device; not saved "
                                   "(the trial goes on; a later trial retrains these epochs)")
                    return None
                logger.warning(f"checkpoint {self._where(artifact_id)}: no space left on device; evicted "
                               f"{len(freed)} other checkpoints and trying again")
        self.evict()
        return artifact_id

    def _where(self, artifact_id: str) -> str:
        folder = self.store.folder if isinstance(self.store, _Listing) else None
        return str(folder / artifact_id) if folder is not None else artifact_id

    def evict(self, *, max_mb: float | None = None, keep: str | None = None) -> list[str]:
        """Delete the least recently used checkpoints until the store holds at most `max_mb` (default: the cap) of
        them, never those of key `keep` (a store that cannot list its files is not capped)."""
        if not isinstance(self.store, _Listing):
            return []
        limit_mb = self.max_mb if max_mb is None else max_mb
        files = sorted((e for e in self.store.entries(self.prefix) if e[0].rsplit("/", 1)[-1].startswith("epoch")
                        and (keep is None or not e[0].startswith(f"{self.prefix}{keep}/"))), key=lambda e: e[2])
        total = sum(size for _, size, _ in files)
        removed = []
        while files and total > limit_mb * 1e6:
            victim, size, _ = files.pop(0)
            total -= size
            with contextlib.suppress(Exception):
                self.store.remove(victim)
            removed.append(victim)
        return removed
