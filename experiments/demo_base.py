"""The default demo's base, shipped with the package: train it, measure it, compare it with the shipped file.

`make demo` (`lepton-search run`) starts from the Fashion-MNIST CNN at width 48 trained 3 epochs on the 55k train
split. Training it takes ~7 minutes on 2 cores, most of a cold demo, so the package ships its weights
(`lepton_search/workloads/weights/`, 2.6 MB, SHA-256 and accuracies in `manifest.json`). This script is how that
file is made and checked: it trains the base with the workload's own code (your cache entry is used when you
have one; `LEPTON_SEARCH_TRAIN_BASE=1` is set, so the shipped file is never read), exports it to ONNX and scores
the file on validation and test, as a study measures its base, and prints both beside the shipped file's.
`--ship` writes the weights and the manifest entry into the package.

    .venv/bin/python experiments/demo_base.py            # ~7 min on 2 idle cores (training), then compare
    .venv/bin/python experiments/demo_base.py --ship     # and replace the shipped file

Writes experiments/results/demo_base.json. Training is seeded, but the same seed on another CPU or torch build
gives other weights (floating-point order); compare accuracies, not hashes, across hosts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from lepton_search import workloads
from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.paths import file_sha256
from lepton_search.techniques import export
from lepton_search.workloads import _cache
from lepton_search.workloads.fashion_mnist import FashionCNN

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "fashion-cnn-w48-e3-v5000-s0"  # fashion_mnist_cnn()'s defaults: width 48, 3 epochs, 5k validation, seed 0


def score(model: torch.nn.Module, workload, folder: Path) -> dict[str, float]:
    path = folder / "base.onnx"
    export.to_onnx(model, workload.example_input, path)
    return {split: onnx_accuracy(path, workload, split).accuracy for split in ("val", "test")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ship", action="store_true", help="write the weights and manifest entry into the package")
    args = ap.parse_args(argv)
    os.environ[_cache.TRAIN_BASE_ENV] = "1"  # never the shipped file: this script makes it
    started = time.perf_counter()
    wl = workloads.get("fashion-mnist-cnn")
    seconds = time.perf_counter() - started
    trained = _cache.cache_dir() / f"{KEY}.pt"
    shipped_path = _cache.SHIPPED_DIR / f"{KEY}.pt"
    manifest = _cache.shipped_manifest()
    with tempfile.TemporaryDirectory() as tmp:
        mine = score(wl.model, wl, Path(tmp))
        shipped = None
        if shipped_path.is_file():
            twin = FashionCNN(48)
            twin.load_state_dict(torch.load(shipped_path, map_location="cpu", weights_only=True))
            shipped = score(twin.eval(), wl, Path(tmp))
    out = {
        "host": str(this_cpu()), "key": KEY, "torch": torch.__version__,
        "trained": {"path": str(trained), "sha256": file_sha256(trained), "seconds_to_load_or_train": seconds,
                    "val_accuracy": mine["val"], "test_accuracy": mine["test"]},
        "shipped": None if shipped is None else {**manifest.get(KEY, {}), "measured_val_accuracy": shipped["val"],
                                                  "measured_test_accuracy": shipped["test"]},
    }
    print(f"host: {out['host']}")
    print(f"{'':10} {'val':>7} {'test':>7}  sha256")
    print(f"{'this run':10} {mine['val']:7.4f} {mine['test']:7.4f}  {out['trained']['sha256'][:16]}")
    if shipped is not None:
        print(f"{'shipped':10} {shipped['val']:7.4f} {shipped['test']:7.4f}  {manifest.get(KEY, {}).get('sha256', '?')[:16]}")
    if args.ship:
        _cache.SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trained, shipped_path)
        manifest[KEY] = {
            "sha256": file_sha256(shipped_path), "val_accuracy": mine["val"], "test_accuracy": mine["test"],
            "host": out["host"], "torch": torch.__version__, "shipped": datetime.date.today().isoformat(),
            "command": "python experiments/demo_base.py --ship",
        }
        (_cache.SHIPPED_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"shipped: {shipped_path}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo_base.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
