"""How to make INT8 of a Transformer on this CPU: the `int8_mode` knob's two routes against FP32.

For each Transformer workload the unpruned base is exported three ways by the engine's own `compress` (no
fine-tuning): FP32, `int8_mode: dynamic` (ONNX Runtime's dynamic quantizer: INT8 weights, activations quantized per
call) and `int8_mode: static` (NNCF's calibrated QDQ on 128 training samples). Each file is scored on validation and
test (dynamic files one sample a call, as served) and timed interleaved in the front experiments' harness
(`_harness.HARNESS`). The rule `int8_mode: auto` follows (`techniques.int8_dynamic.dynamic_route`) is dynamic for
self-attention; this script is what that rule rests on.

    python experiments/int8_modes.py                          # both workloads (~5 min on a 2-core host)
    python experiments/int8_modes.py --workloads fashion-vit  # one

Writes `results/int8_modes.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import HARNESS, accuracies, remeasure, stderr_pts

from lepton_search.candidate import compress
from lepton_search.latency import HostCpuLatency
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.workloads.bbc_minilm import bbc_minilm
from lepton_search.workloads.fashion_vit import fashion_vit

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = {"bbc-minilm": bbc_minilm, "fashion-vit": fashion_vit}
MODES = {"fp32": CompressionConfig(0.0, 32, 0), "dynamic": CompressionConfig(0.0, 8, 0, int8_mode="dynamic"),
         "static": CompressionConfig(0.0, 8, 0, int8_mode="static")}


def run(name: str, rounds: int, runs: int) -> dict:
    start = time.perf_counter()
    wl = WORKLOADS[name]()
    work = Path(tempfile.mkdtemp(prefix="int8_modes_"))
    settings = FinetuneSettings(calibration_size=128)
    cands = {mode: compress(wl, cfg, work / f"{mode}.onnx", settings=settings) for mode, cfg in MODES.items()}
    paths = {mode: c.onnx_path for mode, c in cands.items()}
    val, test = accuracies(paths, wl, "val", threads=1), accuracies(paths, wl, "test", threads=1)
    times = remeasure(paths, wl.sample_inputs(), rounds,
                      target=HostCpuLatency(threads=1, batch_size=1, runs=runs, warmup=20, max_repeats=1))
    best = {m: min(v) for m, v in times.items()}
    n_test = len(wl.dataset("test"))
    cpu = this_cpu()
    return {
        "workload": name, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": f"{cpu.model} [{cpu.vendor}: {' '.join(cpu.isa)}]", "harness": HARNESS, "test_size": n_test,
        "modes": {m: {"route": cands[m].quantization.get("summary") or cands[m].quantization.get("activations"),
                      "val_accuracy": val[m], "test_accuracy": test[m], "test_drop_pts": 100 * (test["fp32"] - test[m]),
                      "test_stderr_pts": stderr_pts(test[m], n_test), "latency_ms": best[m],
                      "latency_ms_rounds": times[m], "speedup": best["fp32"] / best[m],
                      "size_mb": cands[m].size_mb} for m in MODES},
        "wall_seconds": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_modes.json")
    args = ap.parse_args()
    kept = [r for r in (json.loads(args.out.read_text()) if args.out.is_file() else [])
            if r["workload"] not in args.workloads]
    records = [run(name, args.rounds, args.runs) for name in args.workloads]
    for rec in records:
        print(f"\n{rec['workload']} on {rec['host']}\n{HARNESS}")
        print(f"{'mode':<8} {'test acc':>9} {'test drop':>16} {'ms':>8} {'speed-up':>8} {'MB':>7}")
        for mode, m in rec["modes"].items():
            print(f"{mode:<8} {100 * m['test_accuracy']:8.2f}% {m['test_drop_pts']:+8.2f} +-{m['test_stderr_pts']:4.2f} "
                  f"{m['latency_ms']:8.3f} {m['speedup']:7.2f}x {m['size_mb']:7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sorted(kept + records, key=lambda r: r["workload"]), indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
