"""Weight sharing on the demo CNN: the `weight_clusters` knob at 0 / 16 / 64 / 256 shared values per layer.

The shipped demo (`fashion-mnist-cnn`, unpruned) is built by the engine's own `compress` at bits 32 with 0 and 1
fine-tuning epoch for each k (an epoch of `--subset` training images, 1000 by default). Each file is scored on validation in ONNX Runtime, timed interleaved (1 thread,
batch 1; the median over rounds of each round's p50), and opened a few times to time session creation (where
ONNX Runtime folds Cast -> Gather -> Mul back into FP32 weights); the optimized graph is checked for a
leftover Gather. The host is shared with other jobs: latency is indicative only.

    python experiments/weight_sharing.py               # ~10 min on a busy 2-core host
    python experiments/weight_sharing.py --rounds 5

Writes `results/weight_sharing.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import accuracies, remeasure

from lepton_search import workloads
from lepton_search.candidate import compress
from lepton_search.latency import HostCpuLatency
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.space import CompressionConfig, FinetuneSettings

RESULTS = Path(__file__).resolve().parent / "results"
KS = (0, 16, 64, 256)
NOTE = "latency indicative only: a shared 2-core host with other jobs running"


def session_ms(path: Path, repeats: int = 5) -> tuple[float, list[str]]:
    """Median session creation time (ORT_ENABLE_ALL, 1 thread) and the op types left in the optimized graph."""
    times, optimized = [], path.with_suffix(".opt.onnx")
    for i in range(repeats):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if i == 0 else \
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if i == 0:  # basic level: constant folding only, saved portable
            so.optimized_model_filepath = str(optimized)
        start = time.perf_counter()
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        if i:
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), sorted({n.op_type for n in onnx.load(optimized).graph.node})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--subset", type=int, default=1000, help="training images per fine-tuning epoch (the engine's "
                    "default is 5000: one epoch of it took 8 min on the busy 2-core host)")
    ap.add_argument("--out", type=Path, default=RESULTS / "weight_sharing.json")
    args = ap.parse_args()
    start = time.perf_counter()
    wl = workloads.get("fashion-mnist-cnn", verbose=False)
    work = Path(tempfile.mkdtemp(prefix="weight_sharing_"))
    settings = FinetuneSettings(subset_size=args.subset)
    cands = {}
    for epochs in (0, 1):
        for k in KS:
            name = f"k{k}-e{epochs}"
            cands[name] = compress(wl, CompressionConfig(0.0, 32, epochs, weight_clusters=k), work / f"{name}.onnx",
                                   settings=settings, seed=0)
            print(f"built {name}: {cands[name].size_mb:.3f} MB ({time.perf_counter() - start:.0f} s)", flush=True)
    paths = {n: c.onnx_path for n, c in cands.items()}
    val = accuracies(paths, wl, "val", threads=1)
    times = remeasure(paths, wl.sample_inputs(), args.rounds,
                      target=HostCpuLatency(threads=1, batch_size=1, runs=args.runs, warmup=20, max_repeats=1))
    rows = {}
    for name, cand in cands.items():
        load_ms, ops = session_ms(cand.onnx_path)
        rows[name] = {"weight_clusters": cand.config.weight_clusters, "finetune_epochs": cand.config.finetune_epochs,
                      "size_bytes": cand.onnx_path.stat().st_size, "size_mb": cand.size_mb,
                      "val_accuracy": val[name], "latency_ms": statistics.median(times[name]),
                      "latency_ms_rounds": times[name], "session_ms": load_ms, "optimized_ops": ops,
                      "finetune_seconds": cand.finetune_seconds}
    cpu = this_cpu()
    record = {"workload": wl.name, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "host": f"{cpu.model} [{cpu.vendor}]", "note": NOTE, "val_size": len(wl.dataset("val")),
              "harness": f"ONNX Runtime CPU, 1 thread, batch 1, {args.runs} runs after 20 warm-up; {args.rounds} "
                         "interleaved rounds; median of the rounds' p50",
              "settings": {"optimizer": settings.optimizer, "subset_size": settings.subset_size,
                           "batch_size": settings.batch_size},
              "rows": rows, "wall_seconds": time.perf_counter() - start}
    base = rows["k0-e0"]
    print(f"\n{wl.name}, bits 32, unpruned; {record['harness']}\n{NOTE}")
    print(f"{'k':>4} {'epochs':>6} {'bytes':>9} {'x smaller':>9} {'val acc':>8} {'ms':>7} {'session ms':>10}  ops after load")
    for r in rows.values():
        print(f"{r['weight_clusters']:>4} {r['finetune_epochs']:>6} {r['size_bytes']:>9} "
              f"{base['size_bytes'] / r['size_bytes']:>8.2f}x {100 * r['val_accuracy']:>7.2f}% {r['latency_ms']:>7.3f} "
              f"{r['session_ms']:>10.1f}  {', '.join(r['optimized_ops'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float))
    print(f"\nwrote {args.out} ({record['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
