"""Recommender front: the engine's search on MovieLens-100k (movielens-ncf, movielens-rating), a point chosen on
validation per target, reported on test, with size and latency ratios, against ONNX Runtime's `quantize_dynamic`
and NNCF's INT8 of the same base file in the same run and harness.

Each workload runs `lepton_search.search` with `search_spaces/recommender.yaml` (embedding_bits x embedding_dim x
MLP pruning x INT8 x distillation epochs; objectives: score, latency, file size). Latency is one request: one user
scored against 100 candidate items (batch 100 rows, the validation split's first user), ONNX Runtime CPU, 1
thread; base, peers and every Pareto point are re-timed interleaved (3 rounds of 100 runs after 20 warm-up,
each file's minimum of its per-round medians), and ratios are base / point.

The chosen point: among the Pareto points whose validation drop is within the target's validation threshold
(`VAL_THRESHOLDS`: a margin under the test bar, since 943 validation users give HR@10 a standard error near
1.5 pt), the fastest one that also reaches the size target (size is known without test); else the fastest
within the threshold. Test is read only to report it. Drops are in the metric's own unit, positive = worse
(HR@10 as a fraction: 1 pt = 0.01; RMSE in stars).

Peers: `onnxruntime.quantization.quantize_dynamic` on the base file (its defaults: INT8 weights per tensor,
Gather tables included, activations quantized at run time) and `nncf.quantize` (static INT8 of the base file,
300 train rows to calibrate, its defaults: it quantizes the MLP's Gemms and leaves the tables FP32).

    .venv/bin/python experiments/recommender_front.py           # ~5 min on 2 idle cores (bases cached)
    .venv/bin/python experiments/recommender_front.py --quick   # smoke run: 6 trials a workload, 1 round

Writes experiments/results/recommender_front.json (a list, one entry per workload), .html (plotly) and prints
a table.
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
from typing import Any

import numpy as np
import onnx
import optuna

from lepton_search import search, workloads
from lepton_search.candidate import calibration_batches
from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency import HostCpuLatency
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.space import SearchSpace
from lepton_search.workloads.movielens import REQUEST_ITEMS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # the experiments folder is not a package

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SPACE = ROOT / "search_spaces" / "recommender.yaml"
# workload -> (test bar, the validation drop that chooses its point, size target, speed target, search limit)
TARGETS = {
    "movielens-ncf": {"bar": 0.01, "val_threshold": 0.005, "size_ratio": 8.0, "speedup": 3.0, "max_drop": 3.0},
    "movielens-rating": {"bar": 0.01, "val_threshold": 0.005, "size_ratio": 4.0, "speedup": None, "max_drop": 0.05},
}
HARNESS = f"ONNX Runtime CPU, 1 thread, 1 request = {REQUEST_ITEMS} rows, 100 runs after 20 warm-up; rounds interleaved; min of medians"


def space_for(name: str, trials: int) -> SearchSpace:
    """The shipped recommender space, with the workload's own quality limit (HR@10 in pt, RMSE in stars)."""
    space = SearchSpace.from_yaml(SPACE)
    return dataclasses.replace(space, max_metric_drop=TARGETS[name]["max_drop"], trials=trials)


def peer_dynamic(base: Path, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(base, out)
    return out


def peer_nncf(base: Path, wl: workloads.Workload, out: Path) -> Path:
    import nncf

    calib = nncf.Dataset(calibration_batches(wl, 300, 0), dict)
    onnx.save(nncf.quantize(onnx.load(str(base)), calib, subset_size=300), str(out))
    return out


def metric(wl: workloads.Workload, path: Path, split: str) -> float:
    """The metric as a person reads it (HR@10 a fraction, RMSE in stars) of `path` on `split`."""
    return wl.task.display(onnx_accuracy(path, wl, split, batch_size=4096).accuracy)


def run_workload(name: str, *, trials: int, rounds: int, folder: Path) -> dict[str, Any]:
    wl = workloads.get(name)
    task, goal = wl.task, TARGETS[name]
    sign = 1.0 if task.greater_is_better else -1.0  # drop = sign * (base - point): positive = worse
    start = time.perf_counter()
    result = search(wl, space_for(name, trials), n_trials=trials, storage=f"sqlite:///{folder / 'study.db'}",
                    study_name=name, artifacts=folder / "artifacts", callbacks=[], remeasure=False, verbose=True)
    search_s = time.perf_counter() - start
    (folder / "front").mkdir()
    paths, rows = harness.export_front(result, folder / "front")
    paths["quantize_dynamic"] = peer_dynamic(paths["base"], folder / "peer_dynamic.onnx")
    paths["nncf_int8"] = peer_nncf(paths["base"], wl, folder / "peer_nncf.onnx")
    val = {n: metric(wl, p, "val") for n, p in paths.items()}
    test = {n: metric(wl, p, "test") for n, p in paths.items()}
    timer = HostCpuLatency(threads=1, batch_size=REQUEST_ITEMS, runs=100, warmup=20, max_repeats=1)
    lat = {n: min(v) for n, v in harness.remeasure(paths, wl.sample_inputs(), rounds, target=timer).items()}
    size = {n: p.stat().st_size / 1e6 for n, p in paths.items()}

    def point(n: str) -> dict[str, Any]:
        return {"val_drop": sign * (val["base"] - val[n]), "test_drop": sign * (test["base"] - test[n]),
                "val_metric": val[n], "test_metric": test[n], "size_mb": size[n], "latency_ms": lat[n],
                "size_ratio": size["base"] / size[n], "speedup": lat["base"] / lat[n]}

    points = []
    for n, row in rows.items():
        config = harness.row_config(row)
        points.append({"trial": int(row.number), "config": config.label(), "knobs": config.as_dict(), **point(n)})
    within = [p for p in points if p["val_drop"] <= goal["val_threshold"]]
    sized = [p for p in within if p["size_ratio"] >= goal["size_ratio"]]
    chosen = min(sized or within, key=lambda p: p["latency_ms"]) if within else None
    peers = [{"name": n, "metric": test[n], "val_metric": val[n], "size_ratio": size["base"] / size[n],
              "speedup": lat["base"] / lat[n], "latency_ms": lat[n], "size_mb": size[n]}
             for n in ("quantize_dynamic", "nncf_int8")]
    dyn = peers[0]
    at_least = (lambda a, b: a >= b) if task.greater_is_better else (lambda a, b: a <= b)
    beats = [p for p in points if at_least(p["test_metric"], dyn["metric"])
             and (p["size_ratio"] > dyn["size_ratio"] or p["speedup"] > dyn["speedup"])]
    checks = {}
    if chosen is not None:
        checks["chosen_within_bar_on_test"] = chosen["test_drop"] <= goal["bar"]
        checks["chosen_size_ratio"] = chosen["size_ratio"] >= goal["size_ratio"]
        if goal["speedup"]:
            checks["chosen_speedup"] = chosen["speedup"] >= goal["speedup"]
    if name == "movielens-ncf":
        checks["a_point_beats_quantize_dynamic_in_size_or_latency_at_ge_its_metric"] = bool(beats)
    extra = {}
    if name == "movielens-ncf":  # NDCG@10 beside HR@10, for the base and the chosen point
        extra = {"ndcg@10": {n: _ndcg(wl, paths[n]) for n in ["base"] + ([f"trial {chosen['trial']}"] if chosen else [])}}
    return {
        "workload": name, "metric": task.metric, "higher_is_better": bool(task.greater_is_better),
        "base": {"metric": test["base"], "val_metric": val["base"], "size_mb": size["base"], "latency_ms": lat["base"]},
        "chosen": chosen,
        "peers": peers, "points": sorted(points, key=lambda p: p["latency_ms"]), "checks": checks,
        "targets": goal, "search_seconds": search_s, "trials": trials, "space": space_for(name, trials).to_dict(),
        "request": f"1 user x {REQUEST_ITEMS} candidate items", "harness": HARNESS, "host": str(this_cpu()),
        "beats_quantize_dynamic": [p["trial"] for p in beats], **extra,
    }


def _ndcg(wl: workloads.Workload, path: Path) -> float:
    from lepton_search.latency.host_cpu import session

    sess = session(path, threads=2)
    scores, labels, users = [], [], []
    for user, item, y in wl.batches("test", batch_size=4096):
        scores.append(sess.run(None, {"user": user.numpy(), "item": item.numpy()})[0])
        labels.append(y.numpy())
        users.append(user.numpy())
    return wl.task.metrics(np.concatenate(scores), np.concatenate(labels), np.concatenate(users))["ndcg@10"]


def figure(entries: list[dict[str, Any]]) -> Any:
    """Size ratio vs speed-up of every Pareto point, the peers and the chosen point, one panel per workload."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(entries), subplot_titles=[e["workload"] for e in entries])
    for col, e in enumerate(entries, start=1):
        unit = "pt" if e["metric"].startswith("hr") else e["metric"]
        scale = 100 if unit == "pt" else 1
        fig.add_trace(go.Scatter(
            x=[p["size_ratio"] for p in e["points"]], y=[p["speedup"] for p in e["points"]], mode="markers",
            name="Pareto points", marker={"color": [scale * p["test_drop"] for p in e["points"]], "colorscale": "Viridis",
                                          "showscale": col == 1, "colorbar": {"title": "test drop"}},
            text=[f"{p['config']}<br>test drop {scale * p['test_drop']:.3g} {unit}" for p in e["points"]],
            showlegend=col == 1), row=1, col=col)
        fig.add_trace(go.Scatter(x=[p["size_ratio"] for p in e["peers"]], y=[p["speedup"] for p in e["peers"]],
                                 mode="markers+text", text=[p["name"] for p in e["peers"]], textposition="top center",
                                 marker={"symbol": "x", "size": 11, "color": "red"}, name="peers",
                                 showlegend=col == 1), row=1, col=col)
        if e["chosen"]:
            fig.add_trace(go.Scatter(x=[e["chosen"]["size_ratio"]], y=[e["chosen"]["speedup"]], mode="markers",
                                     marker={"symbol": "star", "size": 16, "color": "orange"}, name="chosen",
                                     showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="file size ratio (base / point)", type="log", row=1, col=col)
        fig.update_yaxes(title_text="speed-up (base / point)", row=1, col=col)
    fig.update_layout(title="Recommenders on MovieLens-100k: size and speed of the engine's points and the peers")
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 6 trials a workload, 1 timing round")
    ap.add_argument("--workloads", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--trials", type=int, default=None, help="complete trials per workload (default 48, quick 6)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(logging.WARNING)
    # 48: with 24 the chosen ncf point missed 8x smaller in one of two runs (a 9.6x point sat 0.74 pt over the 0.5-pt
    # validation margin); the search takes ~2 min a workload here
    trials = args.trials or (6 if args.quick else 48)
    rounds = 1 if args.quick else 3
    entries = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recommender_front_") as tmp:
        for name in args.workloads:
            folder = Path(tmp) / name
            folder.mkdir()
            entries.append(run_workload(name, trials=trials, rounds=rounds, folder=folder))
    total_s = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "recommender_front_quick" if args.quick else "recommender_front"
    (RESULTS / f"{stem}.json").write_text(json.dumps(entries, indent=2, default=str))
    figure(entries).write_html(RESULTS / f"{stem}.html", include_plotlyjs="cdn")

    print(f"host: {entries[0]['host']}; {total_s / 60:.1f} min; request: 1 user x {REQUEST_ITEMS} items")
    for e in entries:
        b, unit = e["base"], ("pt" if e["metric"].startswith("hr") else e["metric"])
        scale = 100 if unit == "pt" else 1
        print(f"\n{e['workload']} ({e['metric']}, search {e['search_seconds'] / 60:.1f} min): base test "
              f"{b['metric']:.4f}, {b['size_mb']:.3f} MB, {b['latency_ms']:.3f} ms")
        print(f"{'point':<44}{'val drop':>9}{'test':>8}{'test drop':>10}{'MB':>8}{'size x':>8}{'ms':>8}{'speed x':>8}")
        for p in e["peers"]:
            drop = scale * (b["metric"] - p["metric"]) * (1 if e["higher_is_better"] else -1)
            print(f"{'peer ' + p['name']:<44}{'':>9}{p['metric']:>8.4f}{drop:>10.3g}{p['size_mb']:>8.3f}"
                  f"{p['size_ratio']:>8.2f}{p['latency_ms']:>8.3f}{p['speedup']:>8.2f}")
        for p in e["points"]:
            mark = " <- chosen" if e["chosen"] and p["trial"] == e["chosen"]["trial"] else ""
            print(f"{p['config']!s:<44}{scale * p['val_drop']:>9.3g}{p['test_metric']:>8.4f}"
                  f"{scale * p['test_drop']:>10.3g}{p['size_mb']:>8.3f}{p['size_ratio']:>8.2f}{p['latency_ms']:>8.3f}"
                  f"{p['speedup']:>8.2f}{mark}")
        for check, ok in e["checks"].items():
            print(f"{'PASS' if ok else 'FAIL'}  {check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
