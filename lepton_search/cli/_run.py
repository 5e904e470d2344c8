"""run / report / remeasure / export / list."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Any

import click

from lepton_search.errors import ConfigError

STORAGE_HELP = "Optuna storage URL (default: sqlite:///lepton_search.db in the current folder)."


FAULT_OPTIONS = (
    click.option("--grace-s", type=float, default=60.0, show_default=True,
                 help="After SIGTERM / SIGINT, seconds the running trial may take to finish before it is failed and "
                      "queued again (a second signal stops at once)."),
    click.option("--db-retries", type=int, default=8, show_default=True,
                 help="Tries to reach the database again when it goes away, before stopping (nothing is lost)."),
    click.option("--db-max-wait-s", type=float, default=30.0, show_default=True,
                 help="Longest wait between those tries (they start at 1 s and double)."),
)


def fault_settings(grace_s: float, db_retries: int, db_max_wait_s: float) -> Any:
    """The flags above checked (one line each) before anything is loaded; returns the ReconnectSettings."""
    from lepton_search.faults import PoliteStop, ReconnectSettings

    PoliteStop(grace_s)
    return ReconnectSettings(retries=db_retries, max_wait_s=db_max_wait_s)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)


def _workload(spec: str | None, data_dir: str | None):
    from lepton_search import workloads

    if spec is None:
        return workloads.get("fashion-mnist-cnn", data_dir=data_dir)
    if ":" in spec:
        return workloads.build_factory(spec, field="--workload")
    return workloads.get(spec) if data_dir is None else workloads.get(spec, data_dir=data_dir)


def _with_sampler(space, sampler: str | None):
    if sampler is None:
        return space
    try:
        return dataclasses.replace(space, sampler=sampler)
    except ConfigError as exc:
        raise ConfigError("--sampler", sampler, exc.fix) from None


@click.command("run")
@click.argument("space", required=False, type=click.Path(dir_okay=False))
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--study", "study_name", default=None, help="Study name (default: the workload's name). Same name resumes.")
@click.option("--trials", type=int, default=None, help="Total COMPLETE trials the study should reach.")
@click.option("--workload", default=None, help="Built-in name (see `list`) or package.module:factory.")
@click.option("--target", default="host-cpu", show_default=True, help="Latency target (see `targets`).")
@click.option("--data-dir", default=None, help="Folder with the Fashion-MNIST *-ubyte.gz files.")
@click.option("--artifacts", default=None, help="Artifact folder (default: beside the SQLite file).")
@click.option("--sampler", default=None, help="tpe | nsga2 | gp | random (default: the space file's).")
@click.option("--timeout", type=float, default=None, help="Wall-clock budget in seconds, checked between trials.")
@FAULT_OPTIONS[0]
@FAULT_OPTIONS[1]
@FAULT_OPTIONS[2]
def run_cmd(space: str | None, storage: str | None, study_name: str | None, trials: int | None,
            workload: str | None, target: str, data_dir: str | None, artifacts: str | None, sampler: str | None,
            timeout: float | None, grace_s: float, db_retries: int, db_max_wait_s: float) -> None:
    """Run (or resume) a search. With no SPACE, the embedded default on Fashion-MNIST."""
    from lepton_search import SearchSpace, default_space, search
    from lepton_search.default_spaces import default_space_for
    from lepton_search.results.report import front_table
    from lepton_search.storage import (
        DEFAULT_STORAGE,
        artifact_store_for,
        describe_artifact_store,
        open_storage,
    )
    from lepton_search.study import make_target

    _quiet_optuna()
    space_obj = SearchSpace.from_yaml(space) if space else default_space()
    if timeout is not None and timeout <= 0:
        raise ConfigError("--timeout", timeout, "give a number of seconds > 0")
    if trials is not None and trials < 1:
        raise ConfigError("--trials", trials, "must be >= 1")
    space_obj = _with_sampler(space_obj, sampler)
    make_target(target, space_obj)  # unknown target fails before any data is loaded
    reconnect = fault_settings(grace_s, db_retries, db_max_wait_s)
    url = storage or DEFAULT_STORAGE
    if not url.startswith("sqlite"):  # a database that does not answer, refused before any training (a SQLite
        # file always answers; opening it here would leave an empty database behind a refusal); one restarting
        # is waited for as the search would (--db-retries)
        from lepton_search.faults import answered
        from lepton_search.storage import redact

        answered(lambda: open_storage(url), reconnect, redact(url))
    artifact_store_for(storage or DEFAULT_STORAGE, artifacts)  # a folder that cannot be written, likewise
    wl = _workload(workload, data_dir)
    if not space:  # the default of the workload's kind of model, scaled to its depth and length
        default, why = default_space_for(wl)
        space_obj = _with_sampler(default, sampler)
        click.echo(f"space: search_spaces/{why}", err=True)
    result = search(wl, space_obj, target=target, n_trials=trials, storage=storage, study_name=study_name,
                    artifacts=artifacts, timeout=timeout, grace_s=grace_s, reconnect=reconnect)
    click.echo(front_table(result))
    store = artifact_store_for(storage or DEFAULT_STORAGE, artifacts)
    click.echo(f"\nstudy {result.study.study_name!r} in {storage or DEFAULT_STORAGE}; artifacts in {describe_artifact_store(store)}")
    click.echo(f"next: lepton-search report --study {result.study.study_name}   |   "
               f"lepton-search export --study {result.study.study_name} --trial N --out DIR")


@click.command("report")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--all", "show_all", is_flag=True, help="Show every trial, not only the Pareto front.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report (plot, table, recommended configs).")
@click.option("--png", "png_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the Pareto plot as PNG (kaleido + system Chromium).")
def report_cmd(storage: str | None, study_name: str, show_all: bool, html_path: str | None,
               png_path: str | None) -> None:
    """Print the Pareto front (or all trials) of a stored study; optionally write HTML / PNG."""
    from lepton_search import load
    from lepton_search.results.report import front_table
    from lepton_search.storage import DEFAULT_STORAGE

    result = load(storage or DEFAULT_STORAGE, study_name)
    click.echo(front_table(result))
    trials = result.trials()
    counts = trials["state"].value_counts().to_dict()
    click.echo("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())))
    failed = trials[trials["state"] == "FAIL"]
    for reason, n in failed["fail_reason"].fillna("unknown").value_counts().items():
        click.echo(f"  failed x{n}: {reason}")
    if show_all:
        click.echo(trials.to_string(index=False))
    if html_path or png_path:
        from lepton_search.results.html import save_png, write_html

        if html_path:
            click.echo(f"wrote {write_html(result, html_path)}")
        if png_path:
            click.echo(f"wrote {save_png(result.plot_pareto(), png_path)}")


@click.command("remeasure")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Interleaved rounds over the base and every front file; each keeps its minimum median.")
@click.option("--artifacts", default=None, help="Artifact folder (default: beside the SQLite file).")
def remeasure_cmd(storage: str | None, study_name: str, repeats: int, artifacts: str | None) -> None:
    """Time the base and the Pareto front again on this host, interleaved (after a search on a busy host)."""
    from lepton_search import load
    from lepton_search.latency.host_cpu import busy_reason, other_runnable
    from lepton_search.results.report import front_table
    from lepton_search.storage import DEFAULT_STORAGE

    result = load(storage or DEFAULT_STORAGE, study_name, artifacts=artifacts)
    busy = busy_reason(others=other_runnable(), cv=0.0, max_cv=1.0, load_avg_1min=os.getloadavg()[0])
    if busy:
        click.echo(f"warning: this host is busy now ({busy}); the figures will be too")
    again = result.remeasure(repeats=repeats)
    if again is None:
        click.echo("nothing re-measured: the study has no front yet, or its target predicts rather than measures")
        return
    click.echo(f"re-measured the base and {len(again['trials'])} front file(s), min of {repeats} interleaved rounds")
    click.echo(front_table(result))


@click.command("export")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--trial", type=int, required=True, help="Trial number (see `report`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--workload", default=None, help="Workload for the ORT re-check (default: the study's, if built-in).")
@click.option("--data-dir", default=None, help="Folder with the Fashion-MNIST *-ubyte.gz files.")
def export_cmd(storage: str | None, study_name: str, trial: int, out_dir: str, workload: str | None,
               data_dir: str | None) -> None:
    """Write model.onnx, config.json and MODEL_CARD.md of one trial; re-check its accuracy in ORT."""
    from lepton_search import load
    from lepton_search.paths import confined_dir
    from lepton_search.results.release import builtin_workload, describe_export
    from lepton_search.storage import DEFAULT_STORAGE

    out = confined_dir("--out", out_dir)
    result = load(storage or DEFAULT_STORAGE, study_name)
    wl = _workload(workload, data_dir) if workload else builtin_workload(result, data_dir=data_dir)
    with warnings.catch_warnings():  # the line below says it, with the fix (--workload)
        warnings.filterwarnings("ignore", message="export of trial .* accuracy not re-checked")
        result.export(trial, out, workload=wl)
    click.echo(describe_export(out))


@click.command("list")
def list_cmd() -> None:
    """List built-in workloads."""
    from lepton_search import list_workloads

    for name in list_workloads():
        click.echo(name)
