"""Accuracy of an ONNX file, computed by running it in ONNX Runtime on a data split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton_search.latency.host_cpu import session
from lepton_search.workloads import Workload


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float  # fraction in [0, 1] (or the workload metric's value)
    correct: int | None  # top-1 correct answers (None under a custom metric)
    total: int


def onnx_accuracy(onnx_path: str | Path, workload: Workload, split: str = "val", *, batch_size: int = 256,
                  threads: int = 2) -> AccuracyResult:
    sess = session(onnx_path, threads=threads)
    name = sess.get_inputs()[0].name
    logits, labels = [], []
    for xb, yb in workload.batches(split, batch_size=batch_size):
        out = sess.run(None, {name: xb.numpy().astype(np.float32)})[0]
        if not np.all(np.isfinite(out)):
            # No file name in the message: `report` groups failures by reason, across trials.
            raise FloatingPointError(f"the ONNX model produced non-finite outputs (NaN/inf) on the {split} split")
        logits.append(out)
        labels.append(yb.numpy())
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    correct = int((all_logits.argmax(1) == all_labels).sum()) if workload.metric is None else None
    return AccuracyResult(workload.score(all_logits, all_labels), correct, len(all_labels))
