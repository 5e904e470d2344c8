"""Accuracy of an ONNX file, computed by running it in ONNX Runtime on a data split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from lepton_search.latency.decode import Decoder, past_inputs
from lepton_search.latency.host_cpu import session
from lepton_search.workloads import Workload

_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
          "tensor(bool)": np.bool_}  # ONNX Runtime's input type -> the numpy dtype it is fed


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float  # the task's score, higher is better: a fraction in [0, 1] for classification, -RMSE for
    # regression (or the workload's custom metric)
    correct: int | None  # top-1 correct answers (None for other tasks and under a custom metric)
    total: int


# Ops that quantize activations at run time with scales from the whole call (ONNX Runtime's dynamic INT8): the
# file's answers depend on what else is in its batch, so it is scored one sample a call, as it is served.
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"})


def served_batch_size(onnx_path: str | Path) -> int | None:
    """1 when the file quantizes activations per call (`DYNAMIC_QUANT_OPS`), else None (any batch scores alike).
    A dynamic INT8 MiniLM scored 93.48% validation at batch 256 and 93.93% at batch 1 (issue 22)."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return 1 if any(node.op_type in DYNAMIC_QUANT_OPS for node in graph.node) else None


def onnx_accuracy(onnx_path: str | Path, workload: Workload, split: str = "val", *, batch_size: int = 256,
                  threads: int = 2, transform: Any = None) -> AccuracyResult:
    """Run `onnx_path` on every batch of `split`, each graph input fed its data column in the graph's dtype
    (`transform`: a candidate's `InputTransform`, applied to each batch's feeds first). A file with dynamic INT8
    runs one sample a call (`served_batch_size`): its accuracy is the served one, whatever `batch_size` says; a task
    with large outputs scores at most `Task.batch_limit` rows a call and keeps what `Task.summarize` keeps of each."""
    batch_size = served_batch_size(onnx_path) or min(batch_size, workload.task.batch_limit or batch_size)
    sess = session(onnx_path, threads=threads)
    # a generation file (past key/values in): each batch a prefill with an empty past, fed its ids and mask
    decoder = Decoder(onnx_path, session=sess) if past_inputs(sess) else None
    graph_inputs = [(i.name, _NUMPY.get(i.type, np.float32)) for i in sess.get_inputs()
                    if decoder is None or i.name in ("input_ids", "attention_mask")]
    group_at = workload.input_names.index(workload.task.group_by) if workload.task.group_by in workload.input_names else None
    logits, labels, groups = [], [], []
    for *xs, yb in workload.batches(split, batch_size=batch_size):
        if len(xs) != len(graph_inputs):
            raise ValueError(f"the {split} split gives {len(xs)} inputs per sample, the ONNX graph takes "
                             f"{len(graph_inputs)} ({', '.join(n for n, _ in graph_inputs)})")
        feeds = {n: x.numpy().astype(t, copy=False) for (n, t), x in zip(graph_inputs, xs)}
        feeds = transform.apply(feeds) if transform is not None else feeds
        out = decoder.prefill(feeds["input_ids"], feeds["attention_mask"]) if decoder else sess.run(None, feeds)[0]
        if not np.all(np.isfinite(out)):
            # No file name in the message: `report` groups failures by reason, across trials.
            raise FloatingPointError(f"the ONNX model produced non-finite outputs (NaN/inf) on the {split} split")
        logits.append(workload.task.summarize(out, yb.numpy()))  # a language model keeps (log-loss, tokens) a row
        labels.append(yb.numpy())
        if group_at is not None:  # a ranking task ranks rows within each user
            groups.append(xs[group_at].numpy())
    all_logits, all_labels = np.concatenate(logits), np.concatenate(labels)
    correct = workload.task.correct(all_logits, all_labels) if workload.metric is None else None
    score = workload.score(all_logits, all_labels, np.concatenate(groups) if groups else None)
    return AccuracyResult(score, correct, len(all_labels))
