"""targets / measure / calibrate / retarget: latency targets, their calibration, re-scoring a study.

Top-level imports are click and the standard library only: `measure` must run on a device that has
onnxruntime and numpy but no torch.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from lepton_search.errors import ConfigError

STORAGE_HELP = "Optuna storage URL (default: sqlite:///lepton_search.db in the current folder)."
# library parameter -> the `calibrate` flag that sets it (library errors name the parameter)
CALIBRATE_FLAGS = {"csv_path": "--csv", "graphs_dir": "--graphs", "target": "--target", "out": "--out",
                   "n_graphs": "--n-graphs"}


@contextlib.contextmanager
def flag_names(flags: dict[str, str]) -> Iterator[None]:
    """Re-raise a library `ConfigError` about parameter `p` as one about its flag `flags[p]`."""
    try:
        yield
    except ConfigError as exc:
        if exc.field not in flags:
            raise
        raise ConfigError(flags[exc.field], exc.value, exc.fix) from None


@click.command("targets")
def targets_cmd() -> None:
    """List latency targets: where their latency comes from, expected error, price."""
    from lepton_search.latency import get_target, list_targets

    click.echo(f"{'target':<28} {'source':<10} {'error':>7} {'usd/h':>7}  device")
    for name in list_targets():
        try:
            info = get_target(name).describe()
        except ConfigError as exc:
            click.echo(f"{name:<28} unavailable: {exc.fix}")
            continue
        err = info.get("expected_error_pct")
        price = info.get("usd_per_hour")
        device = info.get("device") or info.get("cpu", "")
        click.echo(f"{name:<28} {info.get('source', '?'):<10} {'-' if err is None else f'{err:.0f}%':>7} "
                   f"{'-' if price is None else f'{price:.3f}':>7}  {device}")
        if info.get("warning"):  # a table or profile of another CPU than this host, or of an unknown one
            click.echo(f"{'':<28} warning: {info['warning']}")


@click.command("measure")
@click.argument("folder", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_csv", required=True, type=click.Path(dir_okay=False), help="CSV to write.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per file (>= 20).")
@click.option("--kernels", is_flag=True, help="Also profile every kernel into <out stem>.kernels.csv "
              "(for `calibrate --kernels`).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Time the folder N times over; each file keeps its fastest round (shared machines).")
def measure_cmd(folder: str, out_csv: str, threads: int, batch_size: int, runs: int, kernels: bool,
                rounds: int) -> None:
    """Time every *.onnx in FOLDER here with ONNX Runtime; write a CSV for `calibrate --csv`.

    Each file is fed the validation samples beside it (<stem>.sample_inputs.npz, or the sample_inputs.npz that
    `export` writes beside model.onnx) when they fit its inputs, else synthetic inputs (CSV column `inputs`)."""
    from lepton_search.latency.measure import measure_dir

    for name, value in (("--threads", threads), ("--batch-size", batch_size), ("--rounds", rounds)):
        if value < 1:
            raise ConfigError(name, value, "must be >= 1")
    if runs < 20:
        raise ConfigError("--runs", runs, "use at least 20 timed runs for a stable median")
    try:
        rows = measure_dir(folder, out_csv, threads=threads, batch_size=batch_size, runs=runs, kernels=kernels,
                          rounds=rounds)
    except FileNotFoundError:
        raise ConfigError("FOLDER", folder, "holds no *.onnx files") from None
    click.echo(f"wrote {len(rows)} measurements to {out_csv}")


@click.command("calibrate")
@click.option("--target", default=None, help="Profile to calibrate (see `targets`); with --kernels the device "
              "name [default: host-cpu].")
@click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False),
              help="Measurements from `lepton-search measure` run on the device (else measured here, for this host).")
@click.option("--graphs", default=None, type=click.Path(file_okay=False),
              help="Folder of the measured ONNX files (default: build the built-in calibration set).")
@click.option("--out", default=None, type=click.Path(),
              help="Calibrated profile to write (default: <profile dir>/<target>-calibrated.yaml); with --kernels "
              "a table CSV or a folder (default: <profile dir>/<target>-kernels.csv).")
@click.option("--kernels", is_flag=True, help="Build a kernel table (target <target>-kernels) instead of fitting "
              "a profile: time ORT's kernels in synthetic sweep graphs.")
@click.option("--write-graphs", default=None, type=click.Path(file_okay=False),
              help="With --kernels: only write the sweep graphs to this folder, to measure on a remote device.")
@click.option("--n-graphs", type=int, default=600, show_default=True,
              help="With --kernels: sweep graphs (x4 widths; 600 take ~10 min to write and time here).")
@click.option("--refresh", is_flag=True, help="With --kernels: re-time 24 of this host's table graphs (~20 s) and "
              "store how much faster or slower the host runs now; predictions are scaled by it.")
def calibrate_cmd(target: str | None, csv_path: str | None, graphs: str | None, out: str | None, kernels: bool,
                  write_graphs: str | None, n_graphs: int, refresh: bool) -> None:
    """Fit a profile's efficiency factors (or, with --kernels, build a kernel table); report the held-out error."""
    with flag_names(CALIBRATE_FLAGS):
        _calibrate(target, csv_path, graphs, out, kernels, write_graphs, n_graphs, refresh)


def _calibrate(target: str | None, csv_path: str | None, graphs: str | None, out: str | None, kernels: bool,
               write_graphs: str | None, n_graphs: int, refresh: bool) -> None:
    if refresh:
        if not kernels:
            raise ConfigError("--refresh", True, "add --kernels: only a kernel table of this host can be refreshed")
        from lepton_search.calibration.kernel_table import refresh as refresh_table

        scale = refresh_table(target or "host-cpu", path=out)
        click.echo(f"this host runs x{scale:.3f} the time it did when its kernel table was timed; predictions "
                   "of that table are scaled by it from now on")
        return
    if kernels or write_graphs is not None:
        return _calibrate_kernels(target or "host-cpu", csv_path, graphs, out, write_graphs, n_graphs)
    if target is None:
        raise ConfigError("--target", None, "name the profile to calibrate (see `lepton-search targets`), or pass "
                          "--kernels for a kernel table of this host")
    from lepton_search.calibration.profile_fit import calibrate_profile
    from lepton_search.latency.device_profile import load_profile

    profile = load_profile(target)
    if csv_path is not None and graphs is None:
        raise ConfigError("--graphs", None, "pass the folder of ONNX files the CSV was measured on")
    if csv_path is None and not profile.raw.get("measure_here", False):
        raise ConfigError("--csv", None, f"{target} is not this machine: run `lepton-search measure DIR --out CSV` "
                          "on the device and pass --csv CSV --graphs DIR")
    with tempfile.TemporaryDirectory(prefix="lepton_calib_") as tmp:
        if graphs is None:
            from lepton_search.calibration.calibration_set import build_set

            graphs = str(Path(tmp) / "graphs")
            click.echo(f"building the calibration set in {graphs} ...", err=True)
            build_set(graphs)
        if csv_path is None:
            from lepton_search.latency.measure import measure_dir

            csv_path = str(Path(tmp) / "measured.csv")
            measure_dir(graphs, csv_path, threads=profile.threads or 1)
        fit = calibrate_profile(profile, graphs_dir=graphs, csv_path=csv_path, out=out)
    h = fit.heldout
    click.echo(f"held-out ({h['scheme']}, {h['n']} graphs): {h['within_10pct']:.0%} within +-10%, "
               f"Spearman {h['spearman']:.3f}, MAPE {h['mape_pct']:.1f}%")
    click.echo(f"wrote {fit.profile_path} (target {fit.profile_path.stem})")


def _calibrate_kernels(target: str, csv_path: str | None, graphs: str | None, out: str | None,
                       write_graphs: str | None, n_graphs: int) -> None:
    if n_graphs < 2:
        raise ConfigError("--n-graphs", n_graphs, "use at least 2 sweep graphs (one is held out to score the table)")
    if write_graphs is not None:
        from lepton_search.calibration.kernel_sweep import write_graphs as write

        paths = write(write_graphs, n_graphs=n_graphs)
        click.echo(f"wrote {len(paths)} sweep graphs to {write_graphs}; on the device run\n"
                   f"  lepton-search measure {write_graphs} --out m.csv --kernels\nthen here\n"
                   f"  lepton-search calibrate --target NAME --kernels --csv m.csv --graphs {write_graphs}")
        return
    from lepton_search.calibration.kernel_table import HERE, calibrate_kernels
    from lepton_search.latency.kernel_model import table_path

    if csv_path is None and target in HERE:
        click.echo(f"timing {n_graphs} sweep graphs x 4 widths here ...", err=True)
    built = calibrate_kernels(target, csv_path=csv_path, graphs_dir=graphs, out=out, n_graphs=n_graphs)
    h = built.heldout
    click.echo(f"held-out ({h['scheme']}, {h['n']} graphs): {h['within_10pct']:.0%} within +-10%, "
               f"Spearman {h['spearman']:.3f}, MAPE {h['mape_pct']:.1f}%")
    home = table_path(built.target)
    where = "" if built.path.resolve() == home.resolve() else f" once copied to {home}"
    click.echo(f"wrote {built.path}: {built.n_kernels} kernels, target {built.target}{where}")


@click.command("retarget")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Finished study to re-score.")
@click.option("--target", required=True, help="Target to re-score on (see `targets`).")
@click.option("--new-study", default=None, help="Name of the new study (default: <study>.<target>).")
@click.option("--artifacts", default=None, help="Artifact folder (default: beside the SQLite file).")
def retarget_cmd(storage: str | None, study_name: str, target: str, new_study: str | None, artifacts: str | None) -> None:
    """Re-score a study's stored ONNX files on another target into a new study (no retraining)."""
    from lepton_search.results.report import front_table
    from lepton_search.results.retarget import retarget
    from lepton_search.storage import DEFAULT_STORAGE

    result = retarget(storage or DEFAULT_STORAGE, study_name, target, new_study=new_study, artifacts=artifacts,
                      verbose=True)
    click.echo(front_table(result))
    click.echo(f"\nnew study {result.study.study_name!r}; next: lepton-search report --study {result.study.study_name}")
