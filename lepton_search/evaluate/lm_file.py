"""A language model's score from its exported generation file: mean next-token log-loss (perplexity = exp) of
windows, each run as a prefill with an empty past (`latency.decode.Decoder.prefill`), batch by batch.

The same function scores our files and the model builder's (the peer), so every perplexity in the LM benchmark is
read off the file that is timed.

Example:
    >>> loss = file_log_loss("out/gen/model.onnx", ids, mask, targets)  # doctest: +SKIP
    >>> round(math.exp(loss), 2)  # doctest: +SKIP
    84.26
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lepton_search.latency.decode import Decoder
from lepton_search.tasks import IGNORE


def file_log_loss(path: str | Path, ids: np.ndarray, mask: np.ndarray, targets: np.ndarray, *, batch: int = 4,
                  threads: int = 0) -> float:
    """Mean next-token log-loss over every target that is not `tasks.IGNORE` (nats a token)."""
    decoder = Decoder(path, threads=threads)
    total, count = 0.0, 0
    for start in range(0, len(ids), batch):
        logits = decoder.prefill(ids[start:start + batch], mask[start:start + batch]).astype(np.float64)
        y = targets[start:start + batch]
        keep = y != IGNORE
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
        picked = np.take_along_axis(logits, np.where(keep, y, 0)[..., None], -1)[..., 0]
        total += float((log_z - picked)[keep].sum())
        count += int(keep.sum())
    return total / max(count, 1)
