"""dashboard: optuna-dashboard on the study storage, with the artifact store so trial files download."""

from __future__ import annotations

from pathlib import Path

import click

from lepton_search.errors import ConfigError

STORAGE_HELP = "Optuna storage URL (default: sqlite:///lepton_search.db in the current folder)."


@click.command("dashboard")
@click.option("--storage", default=None, help=STORAGE_HELP)
@click.option("--artifacts", default=None, help="Artifact folder (default: beside the SQLite file).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
def dashboard_cmd(storage: str | None, artifacts: str | None, host: str, port: int) -> None:
    """Start optuna-dashboard: Pareto plot, trial attributes, role notes, downloadable ONNX / config / card."""
    import optuna_dashboard

    from lepton_search.storage import DEFAULT_STORAGE, artifact_store_for

    if not 0 < port < 65536:
        raise ConfigError("--port", port, "must be between 1 and 65535")
    storage = storage or DEFAULT_STORAGE
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise ConfigError("--storage", storage, "no such SQLite file; run `lepton-search run` first or pass --storage")
    store = artifact_store_for(storage, artifacts)
    click.echo(f"optuna-dashboard on http://{host}:{port}/ (storage {storage}); Ctrl-C to stop", err=True)
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
