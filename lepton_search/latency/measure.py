"""`lepton-search measure DIR --out CSV`: time every ONNX file of a folder with ONNX Runtime, write a CSV.

Runs on the device to calibrate for: it needs only onnxruntime, numpy and the standard library (never
torch, onnx or yaml), so `pip install --no-deps lepton-search onnxruntime numpy` is enough there. Also
runnable without click: `python -m lepton_search.latency.measure DIR --out CSV`.
Each file is fed real samples when they lie beside it: `<stem>.sample_inputs.npz`, else a `sample_inputs.npz`
in the folder (what `export` writes beside `model.onnx`) whose names are the graph's inputs; otherwise synthetic
inputs of the graph's shapes (`graph_inputs`). The CSV's `inputs` column says which.
The CSV is what `lepton-search calibrate --target NAME --csv CSV` reads. With `kernels=True`
(`--kernels`) each file is also run with ORT's profiler and every kernel's median time goes to
`<CSV stem>.kernels.csv`, what `calibrate --kernels --csv CSV` reads.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
from pathlib import Path

from lepton_search.latency._base import SAMPLE_INPUTS_FILE, graph_inputs, load_inputs, with_batch
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.latency.host_cpu import HostCpuLatency
from lepton_search.logging import logger, verbose_call

COLUMNS = ("file", "p50_ms", "p90_ms", "cv", "threads", "batch_size", "load_avg_1min", "device", "runtime",
           "cpu_model", "cpu_vendor", "cpu_isa", "onnxruntime", "inputs")


def input_shape(onnx_path: str | Path, batch_size: int) -> tuple[int, ...]:
    """The first input's shape with symbolic (batch) dimensions set to `batch_size`."""
    from lepton_search.latency.host_cpu import session

    shape = session(onnx_path).get_inputs()[0].shape
    return tuple(d if isinstance(d, int) else batch_size for d in shape)


def feeds_for(onnx_path: str | Path, batch_size: int = 1) -> tuple[dict[str, object], str]:
    """(inputs to time `onnx_path` on, where they came from): the saved samples beside the file when their names
    are the graph's inputs (`<stem>.sample_inputs.npz`, then the folder's `sample_inputs.npz`), else synthetic."""
    from lepton_search.latency.host_cpu import session

    path = Path(onnx_path)
    names = {i.name for i in session(path).get_inputs()}
    for npz in (path.with_name(f"{path.stem}.{SAMPLE_INPUTS_FILE}"), path.with_name(SAMPLE_INPUTS_FILE)):
        if npz.is_file():
            feeds = load_inputs(npz)
            if set(feeds) == names:
                return feeds, npz.name
    return graph_inputs(path, batch_size), "synthetic"


def kernels_csv_path(out_csv: str | Path) -> Path:
    """Where `measure_dir(kernels=True)` writes the per-kernel times beside `out_csv`."""
    return Path(out_csv).with_suffix(".kernels.csv")


@verbose_call
def measure_dir(folder: str | Path, out_csv: str | Path, *, threads: int = 1, batch_size: int = 1,
                runs: int = 50, warmup: int = 10, kernels: bool = False, rounds: int = 1,
                verbose: bool = True) -> list[dict[str, object]]:
    """Time each `*.onnx` in `folder` (sorted by name) and write one CSV row per file to `out_csv`.

    With `rounds` > 1 the folder is timed that many times over and each file keeps its fastest round
    (and each kernel its fastest time): a burst of load from another process does not count."""
    import onnxruntime as ort

    from lepton_search.latency.ort_profiler import KERNEL_COLUMNS, profile_kernels

    files = sorted(Path(folder).glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no *.onnx files in {folder}")
    timer = HostCpuLatency(threads=threads, batch_size=batch_size, runs=runs, warmup=warmup)
    cpu = this_cpu()
    device = f"{cpu.model} ({platform.machine()})"
    best: dict[str, dict[str, object]] = {}
    best_kernels: dict[str, list[dict[str, object]]] = {}
    for r in range(rounds):
        for path in files:
            shape = input_shape(path, batch_size)
            feeds, source = feeds_for(path, batch_size)
            est = timer.latency(path, feeds)
            if kernels:
                # the saved samples (or every input, synthetic) when there are any beyond one float input
                feed = None if source == "synthetic" and len(feeds) == 1 else with_batch(feeds, batch_size)
                got = profile_kernels(path, shape, runs=runs, warmup=warmup, threads=threads, feed=feed)
                old = best_kernels.get(path.name)
                best_kernels[path.name] = [
                    {"file": path.name, "node": k.node, "op": k.op, "cls": k.cls,
                     "us": f"{k.us if old is None else min(k.us, float(old[i]['us'])):.4g}",
                     "in_elems": k.in_elems, "w_elems": k.w_elems, "out_elems": k.out_elems}
                    for i, k in enumerate(got)] if old is None or len(old) == len(got) else old
            if path.name not in best or est.p50_ms < float(best[path.name]["p50_ms"]):
                best[path.name] = {"file": path.name, "p50_ms": f"{est.p50_ms:.6g}", "p90_ms": f"{est.p90_ms:.6g}",
                                   "cv": f"{est.cv:.4f}", "threads": threads, "batch_size": batch_size,
                                   "load_avg_1min": f"{est.details['load_avg_1min']:.2f}", "device": device,
                                   "runtime": f"onnxruntime {ort.__version__} CPU", "cpu_model": cpu.model,
                                   "cpu_vendor": cpu.vendor, "cpu_isa": " ".join(cpu.isa),
                                   "onnxruntime": cpu.onnxruntime or ort.__version__, "inputs": source}
            if verbose:
                logger.info(f"[{r + 1}/{rounds}] {path.name:<42} p50 {est.p50_ms:9.4f} ms  cv {est.cv:.3f}")
    rows = [best[p.name] for p in files]
    kernel_rows = [k for p in files for k in best_kernels.get(p.name, [])]
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    if kernels:
        with open(kernels_csv_path(out_csv), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(KERNEL_COLUMNS))
            writer.writeheader()
            writer.writerows(kernel_rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kernels", action="store_true", help="also profile every kernel (kernel-table calibration)")
    parser.add_argument("--rounds", type=int, default=1, help="time the folder N times; keep each file's fastest")
    args = parser.parse_args(argv)
    measure_dir(args.folder, args.out, threads=args.threads, batch_size=args.batch_size, runs=args.runs,
                kernels=args.kernels, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
