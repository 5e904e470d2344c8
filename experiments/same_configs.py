"""Same configs, same results: fixed configs through the engine's pipeline, figures that a behaviour-preserving
refactor must leave bit-for-bit identical (issue 29).

For each workload a fixed list of configs (the knobs that act there) is compressed the way a search trial of a
space with fine-tune epochs 0-1 compresses it (seed 0, the trial's settings: fine-tune subset, calibration set),
and each exported file is scored on validation by the engine's evaluator (`lepton_search.evaluate`, as a trial
scores it, but not timed). Recorded per config, all compared exactly:

- `val_correct` / `val_total` (classification), `score` (the stored score: accuracy, HR@10) and, for ranking, the
  task's metrics (HR@10, NDCG@10) from the file's outputs;
- `val_outputs_sha256`: a SHA-256 of the file's validation outputs (float bytes, fed as the evaluator feeds them);
- `size_bytes`, `file_sha256`, `initializers_sha256` (the initializers' dtype, shape and bytes, independent of
  their names and order), `op_counts` (node op types of the main graph);
- `macs`, `params`, `weight_sparsity` of the torch model the file was exported from.

Latency is not recorded (timing noise). Fixed seeds: `compress(seed=0)` seeds torch; the script also seeds
Python's and NumPy's generators before each config, and fixes torch's thread count (`--threads`), so each config
gives the same figures whatever ran before it. The base models come from the shared cache
(`$LEPTON_SEARCH_CACHE`, default ~/.cache/lepton_search; the demo CNN's shipped weights): each workload's base
weights digest is recorded, and a comparison whose bases differ says so first.

Front door: `lepton_search.ModelOptimizer(...).compress(**knobs)` (its `candidate`), which builds a trial's file
when epochs are 0 or the space's maximum (the schedule's horizon is the config's epochs); where it raises (before
issue 29 it scores a `seq_len` file at the workload's full length), `lepton_search.compress` as a trial calls it
(`horizon` = 1). Which one built each config is recorded (`built_by`, not compared).

    python experiments/same_configs.py                                    # all three (~10 min on a 2-core host)
    python experiments/same_configs.py --workloads movielens-ncf          # one
    python experiments/same_configs.py --out /tmp/after.json \\
        --compare experiments/results/same_configs_before.json            # after a refactor: exit 1 if any differs

Writes `results/same_configs.json` (or `--out`) and prints a table; `--compare` prints identical / differing
figures per config.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

import lepton_search as ls
from lepton_search.space import CompressionConfig, FinetuneSettings

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 0
HORIZON = 1  # the notional space's fine-tune epochs are 0-1: a 1-epoch config's schedule spans 1 epoch
C = CompressionConfig

# workload -> (fine-tune settings of its notional space, configs). Subsets are small so the whole script fits
# ~10 min on a busy 2-core host; calibration stays the trial default (300 train samples).
WORKLOADS: dict[str, tuple[FinetuneSettings, tuple[CompressionConfig, ...]]] = {
    "fashion-mnist-cnn": (FinetuneSettings(subset_size=512), (  # the default workload of `lepton-search run`
        C(0.0, 32, 0),                                  # the FP32 base, exported
        C(0.0, 8, 0),                                   # static INT8 alone (NNCF, calibrated)
        C(0.25, 8, 1, round_to=8),                      # structured 25% at multiples of 8 + QAT 1 epoch + INT8
        C(0.5, 32, 0, prune_method="unstructured"),     # weights zeroed, same graph
        C(0.0, 16, 0),                                  # FP16
        C(0.0, 4, 0),                                   # 4-bit weights
    )),
    "bbc-minilm": (FinetuneSettings(subset_size=64), (
        C(0.0, 32, 0),                                  # the FP32 base, exported
        C(0.0, 8, 0),                                   # INT8 alone (int8_mode auto: dynamic for self-attention)
        C(0.0, 8, 1, seq_len=64, layers=3),             # 64 tokens, 3 layers (head refit) + 1 epoch + INT8
        C(0.25, 32, 0),                                 # heads / FFN channels pruned 25%, FP32, untrained
        C(0.0, 8, 0, fusion="ort"),                     # ONNX Runtime's fusion, then INT8
    )),
    "movielens-ncf": (FinetuneSettings(subset_size=4096), (
        C(0.0, 32, 0),                                  # the FP32 base, exported
        C(0.0, 32, 0, embedding_bits=8),                # embedding tables 8-bit (per-row scale)
        C(0.0, 32, 1, embedding_dim=0.5),               # half the embedding columns + 1 epoch
        C(0.0, 8, 0),                                   # INT8 (the MLP)
        C(0.0, 8, 0, embedding_bits=4),                 # INT8 MLP + 4-bit tables: both graph passes
    )),
}
COMPARED = ("val_total", "val_correct", "score", "metrics", "val_outputs_sha256", "size_bytes", "file_sha256",
            "initializers_sha256", "op_counts", "macs", "params", "weight_sparsity")
DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}  # scored 1 sample a call
VERSIONED = ("torch", "onnx", "onnxruntime", "nncf", "optuna", "transformers", "torch-pruning", "numpy", "onnxscript")


class Untimed(ls.LatencyModel):
    """A target that times nothing: the figures here are the file's, not its latency."""

    name, source = "untimed", "not timed"

    def latency(self, onnx_path: str | Path, inputs: Mapping[str, np.ndarray] | None = None) -> ls.LatencyEstimate:
        return ls.LatencyEstimate(p50_ms=math.nan, p90_ms=math.nan, source=self.source)


# ---- building a config ------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(wl: Any, config: CompressionConfig, settings: FinetuneSettings, folder: Path) -> tuple[Any, str]:
    """(candidate, what built it): `lepton_search.compress` called as a search trial calls it; where that call no
    longer fits (a refactor changed its signature), the public `ModelOptimizer`, which builds the same file for
    configs of 0 or HORIZON epochs (its schedule spans the config's own epochs)."""
    assert config.finetune_epochs in (0, HORIZON), config.label()
    path = folder / f"{config.label().replace('/', '_')}.onnx"
    seed_everything(SEED)
    try:
        return ls.compress(wl, config, path, settings=settings, seed=SEED, horizon=HORIZON), "compress"
    except (TypeError, AttributeError) as exc:
        print(f"  {config.label()}: lepton_search.compress({exc}); ModelOptimizer instead", file=sys.stderr)
    seed_everything(SEED)
    opt = ls.ModelOptimizer(None, wl, target=Untimed(), out_dir=folder / "optimizer", settings=settings, seed=SEED,
                            verbose=False)
    return opt.compress(**config.as_dict()).candidate, "ModelOptimizer"


# ---- the figures ------------------------------------------------------------------------
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def initializers_sha256(model: onnx.ModelProto) -> str:
    """Every initializer's dtype, shape and raw bytes, digested in a name- and order-free way (sorted digests)."""
    parts = []
    for init in model.graph.initializer:
        array = onnx.numpy_helper.to_array(init)
        parts.append(sha256(f"{array.dtype}{list(array.shape)}".encode() + np.ascontiguousarray(array).tobytes()))
    return sha256("".join(sorted(parts)).encode())


def file_figures(path: Path) -> dict[str, Any]:
    model = onnx.load(str(path))
    ops = Counter(node.op_type for node in model.graph.node)
    return {"size_bytes": path.stat().st_size, "file_sha256": sha256(path.read_bytes()),
            "initializers_sha256": initializers_sha256(model), "initializers": len(model.graph.initializer),
            "op_counts": dict(sorted(ops.items()))}


def outputs(path: Path, wl: Any, transform: Any, threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(outputs, labels, groups) of the file on validation, fed as the evaluator feeds it (a dynamic-INT8 file one
    sample a call, else batches of 256; the candidate's input transform on every batch)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    batch = 1 if any(n.op_type in DYNAMIC_OPS for n in graph.node) else 256
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # a busy shared host: no spin-waits
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    names = [(i.name, dtypes.get(i.type, np.float32)) for i in sess.get_inputs()]
    group_by = getattr(wl.task, "group_by", None)
    at = wl.input_names.index(group_by) if group_by in wl.input_names else None
    outs, labels, groups = [], [], []
    for *xs, y in wl.batches("val", batch_size=batch):
        feeds = {n: x.numpy().astype(t, copy=False) for (n, t), x in zip(names, xs)}
        outs.append(sess.run(None, transform.apply(feeds) if transform is not None else feeds)[0])
        labels.append(y.numpy())
        if at is not None:
            groups.append(xs[at].numpy())
    return np.concatenate(outs), np.concatenate(labels), np.concatenate(groups) if groups else None


def measure(wl: Any, cand: Any, threads: int) -> dict[str, Any]:
    """The file's figures; the scores from its validation outputs by the workload's task, as the evaluator
    (`lepton_search.evaluate`) computes a trial's (one pass over validation instead of two)."""
    out, labels, groups = outputs(cand.onnx_path, wl, cand.input_transform, threads)
    # correctly classified: top-1 of a class-score output against integer labels (counted here, not by the task)
    classes = out.ndim == 2 and out.shape[1] > 1 and np.issubdtype(labels.dtype, np.integer)
    correct = int((out.argmax(axis=1) == labels).sum()) if classes else None
    metrics = wl.task.metrics(out, labels, groups) if hasattr(wl.task, "metrics") and groups is not None else None
    return {"val_total": len(labels), "val_correct": correct,
            "score": float(wl.score(out, labels, groups)), "metrics": metrics,
            "val_outputs_sha256": sha256(np.ascontiguousarray(out).tobytes()),
            **file_figures(cand.onnx_path), "macs": int(cand.macs), "params": int(cand.params),
            "weight_sparsity": float(cand.weight_sparsity)}


def base_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run(name: str, threads: int) -> dict[str, Any]:
    start, cpu0 = time.perf_counter(), time.process_time()
    settings, configs = WORKLOADS[name]
    seed_everything(SEED)
    wl = ls.workloads.get(name)
    folder = Path(tempfile.mkdtemp(prefix=f"same_configs_{name}_"))
    rows = {}
    for config in configs:
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cand, built_by = build(wl, config, settings, folder)
            figures = measure(wl, cand, threads)
        route = {k: v for k, v in (cand.quantization or {}).items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
        rows[config.label()] = {
            "knobs": config.as_dict(), **figures, "built_by": built_by, "route": route,
            "quantization_aware": cand.quantization_aware, "finetune_subset": cand.finetune_subset,
            "warnings": sorted({str(w.message).splitlines()[0][:200] for w in caught if "lepton_search" in w.filename}),
            "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
        }
        print(f"  {name} {config.label()}: score {figures['score']:.6f} ({time.perf_counter() - t0:.0f} s, {built_by})",
              file=sys.stderr, flush=True)
    return {"workload": name, "base_sha256": base_digest(wl.model), "task": wl.task.name,
            "finetune": {"subset_size": settings.subset_size, "calibration_size": settings.calibration_size,
                         "horizon": HORIZON, "seed": SEED},
            "configs": rows, "wall_seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu0}


# ---- where it ran -----------------------------------------------------------------------
def git_commit() -> dict[str, Any]:
    root = Path(ls.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=False, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s")[:120],
            "engine_commit": git("log", "-1", "--format=%H", "--", "lepton_search"),  # the last that changed the engine
                        # uncommitted changes to the engine itself (this script's own edits do not count)
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "lepton_search")),
            "package": str(root)}


def host() -> dict[str, Any]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(ln.split(":", 1) for ln in reversed(info.splitlines()) if ":" in ln)  # the first CPU's
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name") or platform.processor(), "cores": os.cpu_count(),
            "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")},
            "python": platform.python_version(), "platform": platform.platform()}


def versions() -> dict[str, str]:
    """Installed releases of VERSIONED (the script's own list: it runs on both sides of a refactor, so it reads
    nothing of the engine's internals)."""
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return {name: installed.get(name, "not installed") for name in VERSIONED}


# ---- compare ----------------------------------------------------------------------------
def show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def compare(new: dict, old: dict) -> int:
    """Print identical / differing figures per config; the number of differences (a missing config counts)."""
    print(f"\ncompare: {new['git']['commit'][:10]} (new) vs {old['git']['commit'][:10]} (stored)")
    for key in ("cpu", "flags"):
        if new["host"].get(key) != old["host"].get(key):
            print(f"  note: host {key} differs ({new['host'].get(key)} vs {old['host'].get(key)}): compare on one host")
    for lib, ver in new["versions"].items():
        if old["versions"].get(lib) != ver:
            print(f"  note: {lib} {ver} vs {old['versions'].get(lib)}")
    differ = 0
    print(f"{'workload':<18} {'config':<40} {'result':<10} detail")
    for name, rec in new["workloads"].items():
        before = old["workloads"].get(name)
        if before is None:
            print(f"{name:<18} {'-':<40} {'missing':<10} not in the stored run")
            continue
        if rec["base_sha256"] != before["base_sha256"]:
            differ += 1
            print(f"{name:<18} {'(base model)':<40} {'DIFFERS':<10} base weights differ: the comparison is void")
        for label in [*before["configs"], *(c for c in rec["configs"] if c not in before["configs"])]:
            a, b = rec["configs"].get(label), before["configs"].get(label)
            if a is None or b is None:
                differ += 1
                print(f"{name:<18} {label:<40} {'MISSING':<10} only in the {'stored' if a is None else 'new'} run")
                continue
            bad = [f for f in COMPARED if a.get(f) != b.get(f)]
            differ += len(bad)
            if not bad:
                print(f"{name:<18} {label:<40} {'identical':<10} {len(COMPARED)} figures")
            for f in bad:
                print(f"{name:<18} {label:<40} {'DIFFERS':<10} {f}: {show(a.get(f))} vs {show(b.get(f))}")
    print(f"\n{'all figures identical' if not differ else f'{differ} figure(s) differ'}")
    return differ


def table(rec: dict) -> None:
    print(f"\n{rec['workload']} ({rec['task']}; base {rec['base_sha256'][:12]}; {rec['wall_seconds']:.0f} s, "
          f"{rec['cpu_seconds']:.0f} CPU s)")
    print(f"{'config':<40} {'val correct':>11} {'score':>9} {'bytes':>10} {'MACs':>11} {'params':>9} {'init sha':>9}"
          f"  ops")
    for label, r in rec["configs"].items():
        correct = "-" if r["val_correct"] is None else f"{r['val_correct']}/{r['val_total']}"
        extra = "" if not r["metrics"] else " " + " ".join(f"{k} {v:.6f}" for k, v in r["metrics"].items())
        ops = " ".join(f"{k}:{v}" for k, v in sorted(r["op_counts"].items(), key=lambda kv: -kv[1])[:4])
        print(f"{label:<40} {correct:>11} {r['score']:9.6f} {r['size_bytes']:>10} {r['macs']:>11} {r['params']:>9} "
              f"{r['initializers_sha256'][:8]:>9}  {ops}{extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (fixed: same figures)")
    ap.add_argument("--out", type=Path, default=RESULTS / "same_configs.json")
    ap.add_argument("--compare", type=Path, help="a stored run: print identical / differing figures, exit 1 if any differs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    record = {"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": git_commit(), "host": host(),
              "versions": versions(), "threads": args.threads, "seed": SEED, "compared_figures": list(COMPARED),
              "workloads": {name: run(name, args.threads) for name in args.workloads}}
    record["wall_seconds"] = time.perf_counter() - start
    for rec in record["workloads"].values():
        table(rec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"\nwrote {args.out} ({record['wall_seconds']:.0f} s)")
    if args.compare is not None:
        return 1 if compare(record, json.loads(args.compare.read_text())) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
