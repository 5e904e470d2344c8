"""Fine-tuning reuse: epoch checkpoints of a pruned model, shared by every trial (and worker) of a study.

Epochs are cumulative: a trial with e epochs resumes from the checkpoint of the same pruned model at the
largest e' <= e and trains only the rest, so a study never trains the same epoch twice. A checkpoint holds
what makes "e' then resume to e" equal "e straight": the weights, the optimizer and scheduler state (the
schedule spans the space's maximum epochs), the loader's generator, the INT8 fake-quant input ranges, and
the seconds spent so far. It is taken before the post-training BatchNorm re-estimation.

The key covers the base weights, the prune settings, quantization-awareness, the seed, the fine-tune
settings and the schedule horizon. Files are written atomically (temporary file + rename), the folder is
capped in size (least recently used evicted first), and a file that does not load or does not match its
key is deleted and retrained, never trusted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton_search.paths import file_lock


def weights_digest(model: nn.Module) -> str:
    """A digest of a model's weights and buffers (what the base model is, for checkpoint keys)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


class CheckpointStore:
    """A folder of `<key>/epoch<e>.pt` files, at most `max_mb` in all.

    Example:
        >>> store = CheckpointStore("lepton_search_artifacts/checkpoints")  # doctest: +SKIP
        >>> store.latest(key, upto=2)  # (epoch, payload) or None  # doctest: +SKIP
    """

    def __init__(self, folder: str | Path, *, max_mb: float = 2048.0) -> None:
        self.folder, self.max_mb = Path(folder), max_mb

    @staticmethod
    def key(**parts: Any) -> str:
        """A stable key for the things that must match for a checkpoint to be reused."""
        text = json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in parts.items()},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Hold `key` while looking up and training it: a second worker on the same pruned model waits, then
        resumes from what the first stored instead of training the same epochs again. (flock: workers that
        share this folder on one host or a local-lock-aware filesystem.)"""
        return file_lock(self.folder / key / ".lock")

    def _path(self, key: str, epoch: int) -> Path:
        return self.folder / key / f"epoch{epoch}.pt"

    def latest(self, key: str, *, upto: int) -> tuple[int, dict] | None:
        """The checkpoint of `key` at the largest epoch <= `upto`; a bad file is deleted and skipped."""
        for epoch in range(upto, 0, -1):
            path = self._path(key, epoch)
            if not path.is_file():
                continue
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                if payload.get("key") != key or payload.get("epoch") != epoch:
                    raise ValueError("checkpoint does not match its key")
            except Exception:  # noqa: BLE001 - truncated, corrupt or foreign: retrain, never trust it
                path.unlink(missing_ok=True)
                continue
            with contextlib.suppress(OSError):
                os.utime(path)  # recently used: evicted last
            return epoch, payload
        return None

    def save(self, key: str, epoch: int, payload: dict) -> Path:
        path = self._path(key, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({**payload, "key": key, "epoch": epoch}, tmp)
        os.replace(tmp, path)  # atomic: another worker sees the old file or the whole new one
        self.evict()
        return path

    def evict(self) -> list[Path]:
        """Delete the least recently used checkpoints until the folder is within `max_mb`."""
        files = sorted((p for p in self.folder.glob("*/epoch*.pt")), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        removed = []
        while files and total > self.max_mb * 1e6:
            victim = files.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
            removed.append(victim)
        return removed
