"""bbc-minilm: the base and a few pruned + INT8 points, built by the search's own `compress`, timed interleaved.

Each config goes through `candidate.compress` exactly as a trial does (prune attention heads and FFN channels
-> distil for `finetune_epochs` -> export -> INT8 by ONNX Runtime's dynamic quantizer), so base and points share
the export path and the sequence length (128 tokens). Accuracy is ONNX Runtime's on the validation and test
splits (426 articles each); latency is the host-cpu target (ONNX Runtime, 1 thread, batch 1, real validation
articles), every file once per round, `--rounds` rounds, each file's minimum median kept: speed-ups are
ratios within one run.

    .venv/bin/python experiments/bbc_minilm_point.py   # base cached; ~15-30 min on a loaded 2-core host

Writes experiments/results/bbc_minilm_point.json and prints a table.
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
CONFIGS = "0/32/0,0/8/0,0.25/8/0,0.5/8/0,0.25/8/1"  # prune_ratio/bits/finetune_epochs


def parse_configs(text: str) -> list[CompressionConfig]:
    out = []
    for item in text.split(","):
        ratio, bits, epochs = item.split("/")
        out.append(CompressionConfig(float(ratio), int(bits), int(epochs)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=CONFIGS, help="prune_ratio/bits/finetune_epochs, comma-separated; "
                                                      "the first is the base")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.002, help="fine-tuning (distillation) learning rate (SGD)")
    ap.add_argument("--subset", type=int, default=256, help="train articles per fine-tuning epoch")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    wl = workloads.get("bbc-minilm")
    settings = FinetuneSettings(subset_size=args.subset, batch_size=16, lr=args.lr)
    with tempfile.TemporaryDirectory(prefix="bbc_minilm_") as tmp:
        rows = harness.compare_configs(wl, parse_configs(args.configs), settings, Path(tmp), rounds=args.rounds, runs=args.runs)
    base = rows[0]
    base_ms = base["latency_ms"]
    out = {"workload": "bbc-minilm", "sequence_length": wl.seq_len,
           "split_sizes": {s: wl.info.get(s) for s in ("train", "val", "test")},
           "base_training": wl.info.get("base_training"),
           "base_test_accuracy": base["test_accuracy"],
           "base_test_stderr_pts": harness.stderr_pts(base["test_accuracy"], base["test_n"]),
           "base_latency_ms": base_ms,
           "finetune": {"lr": args.lr, "batch_size": 16, "subset": args.subset, "optimizer": "SGD one-cycle, distil"},
           "int8": "onnxruntime.quantization.quantize_dynamic (INT8 per-channel weights, dynamic UINT8 activations)",
           "host": {"cpu": _cpu_name(), "threads": 1, "rounds": args.rounds, "runs": args.runs,
                    "timing": "min over rounds of the median of runs, files interleaved"},
           "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bbc_minilm_point.json").write_text(json.dumps(out, indent=2))
    print(f"{'config':<18}{'MB':>7}{'val':>8}{'test':>8}{'drop':>7}{'ms':>9}{'x':>7}")
    for r in rows:
        print(f"{r['label']:<18}{r['size_mb']:>7.2f}{r['val_accuracy']:>8.4f}{r['test_accuracy']:>8.4f}"
              f"{r['test_drop_pts']:>7.2f}{r['latency_ms']:>9.3f}{r['speedup']:>7.2f}")
    print(f"test n={base['test_n']}, base test accuracy {base['test_accuracy']:.4f} "
          f"+- {out['base_test_stderr_pts']:.2f} pts (s.e.); host {out['host']['cpu']}, 1 thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
