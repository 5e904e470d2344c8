"""bbc-lstm: the base and a few pruned + INT8 points, built by the search's own `compress`, timed interleaved.

Each config goes through `candidate.compress` exactly as a trial does (prune LSTM hidden units -> distil
for `finetune_epochs` -> export -> quantize), so base and points share the export path and the sequence
length (128 tokens). Accuracy is ONNX Runtime's on the validation and test splits (426 articles each);
latency is the host-cpu target (ONNX Runtime, 1 thread, batch 1, a real validation article), every file
once per round, `--rounds` rounds, each file's minimum median kept: speed-ups are ratios within one run.

    .venv/bin/python experiments/bbc_lstm_point.py      # ~5-15 min on a shared 2-core host (base cached)

Writes experiments/results/bbc_lstm_point.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from lepton_search import workloads
from lepton_search.latency.host_cpu import _cpu_name
from lepton_search.space import CompressionConfig, FinetuneSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # the experiments folder is not a package

RESULTS = Path(__file__).resolve().parent / "results"
CONFIGS = [CompressionConfig(0.0, 32, 0), CompressionConfig(0.0, 8, 0), CompressionConfig(0.5, 8, 0, round_to=8),
           CompressionConfig(0.25, 8, 2, round_to=8), CompressionConfig(0.5, 8, 2, round_to=8),
           CompressionConfig(0.75, 8, 3, round_to=8)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.2, help="fine-tuning (distillation) learning rate")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    wl = workloads.get("bbc-lstm")
    settings = FinetuneSettings(subset_size="all", batch_size=32, lr=args.lr)
    with tempfile.TemporaryDirectory(prefix="bbc_lstm_") as tmp:
        rows = harness.compare_configs(wl, CONFIGS, settings, Path(tmp), rounds=args.rounds, runs=args.runs)
    base = rows[0]
    base_ms = base["latency_ms"]
    out = {"workload": "bbc-lstm", "sequence_length": wl.seq_len, "split_sizes": wl.info and
           {s: wl.info.get(s) for s in ("train", "val", "test")},
           "base_test_accuracy": base["test_accuracy"],
           "base_test_stderr_pts": harness.stderr_pts(base["test_accuracy"], base["test_n"]),
           "base_latency_ms": base_ms, "finetune": {"lr": args.lr, "batch_size": 32, "subset": "all"},
           "host": {"cpu": _cpu_name(), "threads": 1, "rounds": args.rounds, "runs": args.runs,
                    "timing": "min over rounds of the median of runs, files interleaved"},
           "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bbc_lstm_point.json").write_text(json.dumps(out, indent=2))
    print(f"{'config':<18}{'MB':>6}{'val':>8}{'test':>8}{'drop':>7}{'ms':>8}{'x':>7}")
    for r in rows:
        print(f"{r['label']:<18}{r['size_mb']:>6.2f}{r['val_accuracy']:>8.4f}{r['test_accuracy']:>8.4f}"
              f"{r['test_drop_pts']:>7.2f}{r['latency_ms']:>8.3f}{r['speedup']:>7.2f}")
    print(f"test n={base['test_n']}, base test accuracy {base['test_accuracy']:.4f} "
          f"+- {out['base_test_stderr_pts']:.2f} pts (s.e.); host {out['host']['cpu']}, 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
