"""`lepton-search` command line. It only parses arguments and calls the library.

Commands live in one small module per area; a LeptonError becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from lepton_search.cli._dashboard import dashboard_cmd
from lepton_search.cli._run import export_cmd, list_cmd, remeasure_cmd, report_cmd, run_cmd
from lepton_search.cli._targets import calibrate_cmd, measure_cmd, retarget_cmd, targets_cmd
from lepton_search.cli._workers import init_cmd, worker_cmd
from lepton_search.errors import ConfigError, LeptonError
from lepton_search.logging import get_verbosity, set_verbosity

# The library names its parameters in errors (`study_name: got '../x'`); on the command line the same value
# came from a flag, so each command renames the library's names to its own flags.
_STUDY = {"storage": "--storage", "study_name": "--study"}
_RECONNECT = {"db_retries": "--db-retries", "max_wait_s": "--db-max-wait-s"}
_FAULTS = {"grace_s": "--grace-s", **_RECONNECT}
FLAGS: dict[str, dict[str, str]] = {
    "run": {**_STUDY, "n_trials": "--trials", "artifacts": "--artifacts", "workload": "--workload",
            "target": "--target", **_FAULTS},
    "report": _STUDY,
    "export": {**_STUDY, "trial": "--trial", "out_dir": "--out", "workload": "--workload"},
    "init": {**_STUDY, "workload": "--workload", "artifacts": "--artifacts", "target": "--target", **_RECONNECT},
    "worker": {**_STUDY, "n_trials": "--trials", "artifacts": "--artifacts", "interval_s": "--heartbeat-interval",
               "grace_period_s": "--grace-period", "max_retry": "--max-retry", **_FAULTS},
    "dashboard": {"storage": "--storage", "artifacts": "--artifacts"},
}


def with_flags(command: click.Command, flags: dict[str, str]) -> click.Command:
    """`command`, whose ConfigErrors name `flags[field]` instead of the library's parameter name."""
    callback: Callable[..., Any] = command.callback  # type: ignore[assignment]

    @functools.wraps(callback)
    def renamed(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except ConfigError as exc:
            if exc.field not in flags:
                raise
            raise ConfigError(flags[exc.field], exc.value, exc.fix) from exc

    command.callback = renamed
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lepton-search")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only (no progress lines).")
@click.option("-v", "--verbose", is_flag=True, help="Also debug lines, third-party tools' output among them.")
def cli(quiet: bool, verbose: bool) -> None:
    """Search prune ratio x bit width x fine-tune epochs for a PyTorch model; measure the ONNX artifact.

    Progress goes to stderr through the "lepton_search" logger (a line per trial and per stage)."""
    if quiet and verbose:
        raise ConfigError("--quiet/--verbose", "both", "give one of them")
    if quiet or verbose:
        set_verbosity(logging.WARNING if quiet else logging.DEBUG)


for command in (run_cmd, report_cmd, remeasure_cmd, export_cmd, targets_cmd, list_cmd, init_cmd, worker_cmd,
                measure_cmd, calibrate_cmd, retarget_cmd, dashboard_cmd):
    cli.add_command(with_flags(command, FLAGS[command.name]) if command.name in FLAGS else command)


def main(argv: list[str] | None = None) -> int:
    chosen = get_verbosity()
    try:
        cli.main(args=argv, standalone_mode=False)
    except LeptonError as exc:
        stopped = getattr(exc, "exit_code", None)  # faults.Stopped: a signal stopped it, resumable (128 + signal)
        click.echo(f"{'stopped' if stopped else 'error'}: {exc}", err=True)
        return stopped or 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    finally:
        set_verbosity(chosen)  # --quiet / --verbose last for this invocation only
    return 0


if __name__ == "__main__":
    sys.exit(main())
