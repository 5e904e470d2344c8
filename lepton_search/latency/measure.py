"""`lepton-search measure DIR --out CSV`: time every ONNX file of a folder with ONNX Runtime, write a CSV.

Runs on the device to calibrate for: it needs only onnxruntime, numpy and the standard library (never
torch, onnx or yaml), so `pip install --no-deps lepton-search onnxruntime numpy` is enough there. Also
runnable without click: `python -m lepton_search.latency.measure DIR --out CSV`.
The CSV is what `lepton-search calibrate --target NAME --csv CSV` reads.
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
from pathlib import Path

from lepton_search.latency.host_cpu import HostCpuLatency, _cpu_name

COLUMNS = ("file", "p50_ms", "p90_ms", "cv", "threads", "batch_size", "load_avg_1min", "device", "runtime")


def input_shape(onnx_path: str | Path, batch_size: int) -> tuple[int, ...]:
    """The first input's shape with symbolic (batch) dimensions set to `batch_size`."""
    from lepton_search.latency.host_cpu import session

    shape = session(onnx_path).get_inputs()[0].shape
    return tuple(d if isinstance(d, int) else batch_size for d in shape)


def measure_dir(folder: str | Path, out_csv: str | Path, *, threads: int = 1, batch_size: int = 1,
                runs: int = 50, warmup: int = 10, verbose: bool = True) -> list[dict[str, object]]:
    """Time each `*.onnx` in `folder` (sorted by name) and write one CSV row per file to `out_csv`."""
    import onnxruntime as ort

    files = sorted(Path(folder).glob("*.onnx"))
    if not files:
        raise FileNotFoundError(f"no *.onnx files in {folder}")
    timer = HostCpuLatency(threads=threads, batch_size=batch_size, runs=runs, warmup=warmup)
    device = f"{_cpu_name()} ({platform.machine()})"
    rows: list[dict[str, object]] = []
    for path in files:
        est = timer.latency(path, input_shape(path, batch_size))
        rows.append({"file": path.name, "p50_ms": f"{est.p50_ms:.6g}", "p90_ms": f"{est.p90_ms:.6g}",
                     "cv": f"{est.cv:.4f}", "threads": threads, "batch_size": batch_size,
                     "load_avg_1min": f"{est.details['load_avg_1min']:.2f}", "device": device,
                     "runtime": f"onnxruntime {ort.__version__} CPU"})
        if verbose:
            print(f"{path.name:<48} p50 {est.p50_ms:9.4f} ms  cv {est.cv:.3f}", file=sys.stderr)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    measure_dir(args.folder, args.out, threads=args.threads, batch_size=args.batch_size, runs=args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
