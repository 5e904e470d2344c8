"""How well does the predicted latency model match measurements on architectures it never saw?

Builds 96 graphs (4 architectures x 2 sizes x prune 0/25/50% x FP32/FP16/INT8/INT4; random weights),
times each on this host with ONNX Runtime (`host-cpu`: 1 thread; the median of 3 interleaved rounds,
taking the lowest round, so a burst of load from another process on this shared machine does not
count), then, for each architecture in turn, fits the `host-cpu-model` profile on the other three and
scores the held-out one. Also scores the kernel-table predictor (`kernel_model`): a table of kernels
timed in 600 random synthetic graphs x 4 widths (never these architectures; `--kernel-table`, else
swept now, ~10 min, and cached in experiments/results/host_kernel_table.csv), so every architecture is
held out from it. A cached table measured on another CPU (its `.json` records the CPU) is not used: the
table of this CPU, `host_kernel_table-<cpu>.csv` beside it, is (swept now when missing). 24 of the table's own sweep graphs are timed in the same rounds as the scored ones:
how much the host drifted since the sweep (the "refreshed" scores scale every prediction by it, as
`lepton-search calibrate --kernels --refresh` does) and how well this host reproduces its own timings
(a sweep timed beside other jobs here came out 7% slow across the board). The whole measurement is
repeated `--repeats` times, each scored on its own, since one repeat to the next moves the score.
Writes experiments/results/latency_model_accuracy.json and prints a table.

    .venv/bin/python experiments/latency_model_accuracy.py [--graphs DIR] [--rounds 3] [--repeats 3]
                                                           [--kernel-table CSV]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lepton_search.calibration.calibration_set import MANIFEST, build_set
from lepton_search.calibration.kernel_table import drift_scale, reference_graphs, reference_ratios
from lepton_search.calibration.profile_fit import heldout_predictions, load_samples, scores
from lepton_search.latency.cpu_identity import mismatch, this_cpu
from lepton_search.latency.device_profile import load_profile
from lepton_search.latency.host_cpu import HostCpuLatency
from lepton_search.latency.kernel_model import KernelTable, kernel_of_row
from lepton_search.latency.predicted import params_of, predict_ms

OUT = Path(__file__).parent / "results" / "latency_model_accuracy.json"
TABLE = Path(__file__).parent / "results" / "host_kernel_table.csv"


def table_for_this_cpu(path: Path) -> Path:
    """`path` if its table was measured on this CPU (or is missing), else `<stem>-<this cpu>.csv` beside it."""
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        return path
    here = this_cpu()
    why = mismatch(json.loads(meta.read_text()).get("cpu"), here)
    if why is None:
        return path
    own = path.with_name(f"{path.stem}-{here.slug}.csv")
    print(f"{path.name}: {why}; using {own.name}{'' if own.is_file() else ' (sweeping it now)'}")
    return own


def kernel_table(path: Path, n_graphs: int) -> KernelTable:
    """The cached table at `path`, else swept now (`calibrate --kernels`) with its held-out error stored."""
    if not path.is_file():
        from lepton_search.calibration.kernel_table import calibrate_kernels

        t0 = time.perf_counter()
        built = calibrate_kernels("host-cpu", out=path, n_graphs=n_graphs, runs=40, seed=0)
        meta = json.loads(path.with_suffix(".json").read_text())
        meta.update(n_graphs=n_graphs, seed=0, seconds=round(time.perf_counter() - t0, 1))
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(f"kernel table: {built.n_kernels} kernels, sweep held-out MAPE {built.heldout['mape_pct']:.1f}%")
    return KernelTable.load(path)


def measure(files: list[Path], rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Lowest of `rounds` interleaved medians per graph, and each graph's spread (max / min - 1) over rounds."""
    timer = HostCpuLatency(threads=1, runs=60, warmup=10)
    seen: dict[str, list[float]] = {}
    for r in range(rounds):
        for path in files:
            seen.setdefault(path.name, []).append(timer.latency(path).p50_ms)
        print(f"round {r + 1}/{rounds} measured {len(files)} graphs")
    return {f: min(v) for f, v in seen.items()}, {f: max(v) / min(v) - 1 for f, v in seen.items()}


def breakdown(pred: np.ndarray, meas: np.ndarray, samples: list) -> dict:
    """Scores overall, by architecture and by bit width, and the median predicted / measured ratio."""
    def of(idx: list[int]) -> dict:
        return {**scores(pred[idx], meas[idx]), "median_ratio": float(np.median(pred[idx] / meas[idx]))}

    bits = sorted({s.file.rsplit("-b", 1)[1].removesuffix(".onnx") for s in samples}, key=int)
    return {"overall": of(list(range(len(samples)))),
            "by_architecture": {g: of([i for i, s in enumerate(samples) if s.group == g])
                                for g in sorted({s.group for s in samples})},
            "by_bits": {b: of([i for i, s in enumerate(samples) if s.file.endswith(f"-b{b}.onnx")]) for b in bits}}


def emulation_exact(graphs: Path, files: list[str]) -> float:
    """Share of graphs whose emulated kernel counts (by class) equal those of ORT's optimized graph."""
    import collections

    import onnx

    from lepton_search.latency.host_cpu import session
    from lepton_search.latency.kernels import emulate
    from lepton_search.latency.ort_profiler import node_class

    exact = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            session(graphs / f, optimized_path=Path(tmp) / "opt.onnx")
            ref = collections.Counter(node_class(n) for n in onnx.load(str(Path(tmp) / "opt.onnx")).graph.node)
            exact += collections.Counter(k.cls for k in emulate(graphs / f)) == ref
    return exact / len(files)


def repeat_summary(table: KernelTable, kern: np.ndarray, samples: list, measured: dict[str, float],
                   ref_ms: dict[str, float]) -> dict:
    """One repeat's kernel-table scores, raw and refreshed by that repeat's drift, and the host's test-retest."""
    meas = np.array([measured[s.file] for s in samples])
    drift = drift_scale(table, ref_ms)
    ratio = reference_ratios(table, ref_ms)
    return {"raw": scores(kern, meas), "drift_scale": drift, "refreshed": scores(kern * drift, meas),
            "reference_retest_within_10pct": float(np.mean(np.abs(ratio - 1) <= 0.10))}


def other_cpu_table(path: Path, graphs: Path, samples: list, runs: list) -> dict:
    """The cached table of another CPU (`path`) scored on this host's measurements, each repeat raw and
    refreshed by its own reference graphs (the same seed-0 sweep graphs the table of this CPU uses)."""
    table = KernelTable.load(path)
    pred = np.array([table.predict_ms(graphs / s.file) for s in samples]) / table.drift
    out = []
    for measured, _, ref_ms in runs:
        meas = np.array([measured[s.file] for s in samples])
        drift = drift_scale(table, ref_ms)
        out.append({"raw": scores(pred, meas), "drift_scale": drift, "refreshed": scores(pred * drift, meas)})
    return {"table": str(path), "cpu": table.meta.get("cpu"), "repeats": out}


def compare_regressors(path: Path, *, folds: int = 5) -> dict[str, dict]:
    """g_c fitted by `_boost` (seeds 0, 1) and by scikit-learn's HistGradientBoostingRegressor (the same 300
    trees of depth 4, rate 0.05, 64 bins, 3 rows a leaf; and its defaults), scored as `kernel_table.crossval`
    scores a table: `folds` folds over sweep graphs (all widths of a graph held out together), each graph's
    whole-call time predicted by a table built without it, from its own kernel rows (the emulated kernels of a
    fully paired graph). Needs scikit-learn."""
    import csv

    from sklearn.ensemble import HistGradientBoostingRegressor

    from lepton_search.latency import _boost

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(path.with_suffix(".graphs.csv"), newline="") as fh:
        graphs = list(csv.DictReader(fh))
    cpu = KernelTable.load(path).meta.get("cpu")  # its kernels run in the NCHWc blocks of the CPU it was measured on
    bases = sorted({g["graph"].rsplit("-b", 1)[0] for g in graphs})
    fold_of = {bases[j]: i % folds for i, j in enumerate(np.random.default_rng(0).permutation(len(bases)))}
    fold = [fold_of[r["graph"].rsplit("-b", 1)[0]] for r in rows]

    class Sklearn:
        """`_boost.fit`'s signature over HistGradientBoostingRegressor."""

        def __init__(self, **params) -> None:
            self.params, self.model = params, None

        def __call__(self, x: np.ndarray, y: np.ndarray, *, seed: int = 0) -> Sklearn:
            fitted = Sklearn(**self.params)  # one model per kernel class
            fitted.model = HistGradientBoostingRegressor(early_stopping=False, random_state=seed, **self.params)
            fitted.model.fit(x, y)
            return fitted

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.model.predict(np.atleast_2d(x))

    fits = {"_boost (seed 0)": _boost.fit, "_boost (seed 1)": lambda x, y, seed=0: _boost.fit(x, y, seed=seed + 1),
            "sklearn HGB, _boost's settings": Sklearn(max_iter=300, learning_rate=0.05, max_depth=4,
                                                      max_leaf_nodes=16, min_samples_leaf=3, max_bins=64),
            "sklearn HGB, defaults": Sklearn()}
    out = {}
    for name, fit in fits.items():
        pred, meas, seconds = [], [], 0.0
        for f in range(folds):
            table = KernelTable.from_rows([r for r, k in zip(rows, fold) if k != f],
                                          [g for g in graphs if fold_of[g["graph"].rsplit("-b", 1)[0]] != f],
                                          meta={"cpu": cpu}, fit_shape=fit)
            t0 = time.perf_counter()
            table.classes  # noqa: B018 (fits g_c)
            seconds += time.perf_counter() - t0
            held = [r for r, k in zip(rows, fold) if k == f]
            by_graph: dict[str, list] = {}
            for r in held:
                by_graph.setdefault(r["graph"], []).append(kernel_of_row(r, block=table.block))
            for g in graphs:
                if fold_of[g["graph"].rsplit("-b", 1)[0]] == f:
                    pred.append(table.predict_us(by_graph[g["graph"]]) / 1e3)
                    meas.append(float(g["total_us"]) / 1e3)
        out[name] = {**scores(np.array(pred), np.array(meas)), "fit_seconds": round(seconds, 1)}
        print(f"{name:<32} MAPE {out[name]['mape_pct']:.2f}%  within 10% {out[name]['within_10pct']:.1%}  "
              f"Spearman {out[name]['spearman']:.4f}  fit {seconds:.1f} s ({folds} tables)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graphs", default=None, help="reuse a folder built by a previous run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="measure the scored graphs this many separate times")
    parser.add_argument("--kernel-table", default=str(TABLE), help="kernel table CSV (swept here when missing)")
    parser.add_argument("--sweep-graphs", type=int, default=600, help="sweep graphs (x4 widths) when sweeping")
    parser.add_argument("--compare-regressors", action="store_true",
                        help="only score _boost against scikit-learn's HistGradientBoostingRegressor on --kernel-table")
    args = parser.parse_args()
    if args.compare_regressors:
        compare_regressors(Path(args.kernel_table))
        return
    start = time.perf_counter()
    graphs = Path(args.graphs or tempfile.mkdtemp(prefix="lepton_latency_acc_"))
    if not (graphs / MANIFEST).is_file():
        build_set(graphs)
    table_path = table_for_this_cpu(Path(args.kernel_table))
    table = kernel_table(table_path, args.sweep_graphs)
    # a few of the table's own sweep graphs, timed in the same rounds: how much the host drifted since
    refs = reference_graphs(graphs / "_reference", seed=int(table.meta.get("seed", 0)))
    runs = []  # each repeat: the scored graphs' times, their spread over rounds, the reference graphs' times
    for rep in range(args.repeats):
        measured, spread = measure([*sorted(graphs.glob("*.onnx")), *refs], args.rounds)
        runs.append((measured, spread, {p.name: measured.pop(p.name) for p in refs}))
    measured, spread, ref_ms = runs[-1]  # the per-graph figures below are the last repeat's
    drift = drift_scale(table, ref_ms)
    ref_ratio = reference_ratios(table, ref_ms)
    profile = load_profile("host-cpu-model")
    samples = load_samples(graphs, measured, profile)
    pred, groups = heldout_predictions(samples, profile)
    meas = np.array([s.measured_ms for s in samples])
    uncal = np.array([predict_ms(s.items, params_of(profile), profile.memory_gbps) for s in samples])
    kern = np.array([table.predict_ms(graphs / s.file) for s in samples]) / table.drift  # as measured, raw
    per_group = {g: scores(pred[[i for i, s in enumerate(samples) if s.group == g]],
                           meas[[i for i, s in enumerate(samples) if s.group == g]]) for g in groups}
    result = {
        "host": HostCpuLatency().describe(), "n_graphs": len(samples), "groups": groups,
        "scheme": "leave-one-architecture-out: fit host-cpu-model on 3 architectures, score the 4th",
        "heldout_overall": scores(pred, meas), "heldout_by_architecture": per_group,
        "uncalibrated_overall": scores(uncal, meas),
        "kernel_table": {"scheme": "kernel table from random synthetic graphs; no architecture used for fitting",
                         "table": str(table_path), "table_cpu": table.meta.get("cpu"), **breakdown(kern, meas, samples),
                         "sweep_heldout": table.meta.get("heldout"),
                         "emulation_exact_share": emulation_exact(graphs, [s.file for s in samples]),
                         "per_call_us": table.per_call_us, "per_kernel_us": table.per_kernel_us,
                         "affine_us": {c: [t.a, t.b] for c, t in table.classes.items()},
                         "kernels_by_class": {c: t.n for c, t in table.classes.items()}},
        "kernel_table_refreshed": {"scheme": f"the same table, every prediction x {drift:.3f}: the median (time "
                                             f"now / time in the table) of {len(refs)} of its own sweep graphs "
                                             "timed in the same rounds as the scored graphs "
                                             "(`lepton-search calibrate --kernels --refresh`)",
                                   "drift_scale": drift, **breakdown(kern * drift, meas, samples)},
        # the host's own test-retest: the same graphs timed now and when the table was swept
        "reference_retest": {"n": len(ref_ratio), "within_10pct": float(np.mean(np.abs(ref_ratio - 1) <= 0.10)),
                             "ratio_p5_p50_p95": np.percentile(ref_ratio, [5, 50, 95]).tolist()},
        "repeats": [repeat_summary(table, kern, samples, m, r) for m, _, r in runs],
        # what the cached table of another CPU would have scored here (None when it is this CPU's)
        "other_cpu_table": None if table_path == Path(args.kernel_table) else other_cpu_table(
            Path(args.kernel_table), graphs, samples, runs),
        "bar": {"within_10pct": 0.90, "spearman": 0.95},
        "measurement_spread": {"rounds": args.rounds, "median_pct": float(np.median(list(spread.values())) * 100),
                               "p90_pct": float(np.percentile(list(spread.values()), 90) * 100),
                               "max_pct": float(max(spread.values()) * 100)},
        "graphs": [{"file": s.file, "group": s.group, "measured_ms": s.measured_ms, "heldout_predicted_ms": float(p),
                    "uncalibrated_ms": float(u), "kernel_table_ms": float(k), "kernel_table_refreshed_ms": float(k * drift),
                    "spread_pct": spread[s.file] * 100}
                   for s, p, u, k in zip(samples, pred, uncal, kern)],
        "seconds": round(time.perf_counter() - start, 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"\n{'held-out architecture':<34} {'n':>3} {'within 10%':>11} {'Spearman':>9} {'MAPE %':>7}")
    kt, kr = result["kernel_table"], result["kernel_table_refreshed"]
    rows = [*per_group.items(), ("all (held-out)", result["heldout_overall"]),
            ("all (uncalibrated)", result["uncalibrated_overall"]),
            *((f"kernel table: {g}", v) for g, v in kt["by_architecture"].items()),
            ("kernel table: all", kt["overall"]),
            *((f"kernel table: {b}-bit", v) for b, v in kt["by_bits"].items()),
            *((f"refreshed x{drift:.3f}: {g}", v) for g, v in kr["by_architecture"].items()),
            (f"refreshed x{drift:.3f}: all", kr["overall"]),
            *((f"refreshed x{drift:.3f}: {b}-bit", v) for b, v in kr["by_bits"].items())]
    for name, s in rows:
        print(f"{name:<34} {s['n']:>3} {s['within_10pct']:>11.0%} {s['spearman']:>9.3f} {s['mape_pct']:>7.1f}")
    sp = result["measurement_spread"]
    print(f"\nmeasurement spread over {sp['rounds']} rounds (max/min - 1): median {sp['median_pct']:.1f}%, "
          f"p90 {sp['p90_pct']:.1f}%, max {sp['max_pct']:.1f}%; emulation exact on "
          f"{kt['emulation_exact_share']:.0%} of graphs")
    print(f"\n{'repeat':<8} {'within 10% raw':>15} {'refreshed':>10} {'drift':>7} {'Spearman':>9} {'MAPE %':>7} "
          f"{'host re-test':>13}")
    for i, r in enumerate(result["repeats"], 1):
        print(f"{i:<8} {r['raw']['within_10pct']:>15.0%} {r['refreshed']['within_10pct']:>10.0%} "
              f"{r['drift_scale']:>7.3f} {r['raw']['spearman']:>9.3f} {r['raw']['mape_pct']:>7.1f} "
              f"{r['reference_retest_within_10pct']:>13.0%}")
    for i, r in enumerate((result["other_cpu_table"] or {}).get("repeats", []), 1):
        print(f"repeat {i}, the table of {result['other_cpu_table']['cpu']['model']}: {r['raw']['within_10pct']:.0%} "
              f"within 10% raw (Spearman {r['raw']['spearman']:.3f}, MAPE {r['raw']['mape_pct']:.1f}%), "
              f"{r['refreshed']['within_10pct']:.0%} refreshed (x{r['drift_scale']:.3f}, MAPE {r['refreshed']['mape_pct']:.1f}%)")
    rt = result["reference_retest"]
    print(f"the table's own {rt['n']} reference graphs timed again now: {rt['within_10pct']:.0%} within +-10% of "
          f"their table times (now / then p5 {rt['ratio_p5_p50_p95'][0]:.3f}, median {rt['ratio_p5_p50_p95'][1]:.3f}, "
          f"p95 {rt['ratio_p5_p50_p95'][2]:.3f})")
    print(f"wrote {OUT} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
