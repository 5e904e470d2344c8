"""`lepton-search` command line. It only parses arguments and calls the library.

Commands live in one small module per area; a LeptonError becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

import click

from lepton_search.cli._dashboard import dashboard_cmd
from lepton_search.cli._run import export_cmd, list_cmd, report_cmd, run_cmd
from lepton_search.cli._targets import calibrate_cmd, measure_cmd, retarget_cmd, targets_cmd
from lepton_search.cli._workers import init_cmd, worker_cmd
from lepton_search.errors import LeptonError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lepton-search")
def cli() -> None:
    """Search prune ratio x bit width x fine-tune epochs for a PyTorch model; measure the ONNX artifact."""


for command in (run_cmd, report_cmd, export_cmd, targets_cmd, list_cmd):
    cli.add_command(command)
for command in (init_cmd, worker_cmd):
    cli.add_command(command)
for command in (measure_cmd, calibrate_cmd, retarget_cmd):
    cli.add_command(command)
cli.add_command(dashboard_cmd)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, standalone_mode=False)
    except LeptonError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
