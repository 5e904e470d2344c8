"""What `round_to` buys: latency of structurally pruned nets with odd vs SIMD-friendly channel counts.

Two nets, FP32, exported to ONNX exactly as a trial is (techniques.export), timed with the host-cpu target
(ONNX Runtime, 1 thread, batch 1) on every file in turn, `--rounds` times, keeping each file's minimum
median; speed-ups are ratios within this one run:

- a depthwise-separable CNN (3x64x64 input, widths 32-64-128-256-512) pruned 35%;
- the default workload's 6-conv CNN (Fashion-MNIST shape, width 48) pruned 12.5%, the ratio whose FP32
  trial ran at 0.91-0.92x of its base in experiments/default_front.py.

Latency only: weights are random (seeded); pruning picks channels by L1 magnitude as in a search.

    .venv/bin/python experiments/round_to.py            # ~1 min
    .venv/bin/python experiments/round_to.py --rounds 5

Writes experiments/results/round_to.{json,csv} and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from lepton_search.latency import HostCpuLatency
from lepton_search.latency.host_cpu import _cpu_name
from lepton_search.space import CompressionConfig
from lepton_search.techniques import export, prune
from lepton_search.workloads.fashion_mnist import FashionCNN

RESULTS = Path(__file__).resolve().parent / "results"


def separable_cnn(widths: tuple[int, ...] = (32, 64, 128, 256, 512)) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                               nn.BatchNorm2d(widths[0]), nn.ReLU()]
    for cin, cout in itertools.pairwise(widths):
        layers += [nn.Conv2d(cin, cin, 3, stride=2 if cout > 128 else 1, padding=1, groups=cin, bias=False),
                   nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10)).eval()


def widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    nets = {"separable-cnn": (separable_cnn(), torch.randn(1, 3, 64, 64), 0.35),
            "default-cnn": (FashionCNN().eval(), torch.randn(1, 1, 28, 28), 0.125)}
    timer = HostCpuLatency(threads=1, runs=args.runs, max_repeats=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for net, (model, x, ratio) in nets.items():
            for round_to in (None, 1, 4, 8, 16):
                pruned = model if round_to is None else prune.prune(model, x, CompressionConfig(ratio, 32, 0, round_to=round_to))
                path = Path(tmp) / f"{net}-{round_to}.onnx"
                export.to_onnx(pruned, x, path)
                files[(net, round_to)] = path
                macs, _ = prune.count(pruned, x)
                rows.append({"net": net, "prune_ratio": 0.0 if round_to is None else ratio,
                             "round_to": round_to, "widths": widths(pruned), "macs": macs,
                             "odd_widths": sum(w % 4 != 0 for w in widths(pruned))})
        times: dict[tuple, list[float]] = {k: [] for k in files}
        for _ in range(args.rounds):  # interleaved: every file once per round
            for key, path in files.items():
                times[key].append(timer.latency(path).p50_ms)
    for row in rows:
        key = (row["net"], row["round_to"])
        base = min(times[(row["net"], None)])
        row["latency_ms_min"] = min(times[key])
        row["latency_ms_rounds"] = times[key]
        row["speedup_vs_unpruned"] = base / row["latency_ms_min"]
    table = pd.DataFrame(rows)
    host = {"cpu": _cpu_name(), "machine": platform.machine(), "rounds": args.rounds, "runs": args.runs,
            "threads": 1, "batch_size": 1}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "round_to.json").write_text(json.dumps({"host": host, "rows": rows}, indent=2))
    table.drop(columns=["latency_ms_rounds"]).to_csv(RESULTS / "round_to.csv", index=False)
    shown = table.assign(round_to=table.round_to.fillna(0).astype(int).astype(str).replace("0", "unpruned"),
                         widths=table.widths.map(lambda w: ",".join(map(str, w))))
    print(shown[["net", "prune_ratio", "round_to", "odd_widths", "macs", "latency_ms_min", "speedup_vs_unpruned",
                 "widths"]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nhost: {host['cpu']} ({host['machine']}); min of {args.rounds} interleaved medians of {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
