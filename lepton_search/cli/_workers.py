"""init / worker: one study, its base model made once, any number of worker processes or machines."""

from __future__ import annotations

import click

from lepton_search.cli._run import FAULT_OPTIONS, STORAGE_HELP, _quiet_optuna, fault_settings
from lepton_search.errors import ConfigError

ARTIFACTS_HELP = ("Artifact store every worker reaches: a shared folder, or s3://BUCKET (Optuna's Boto3ArtifactStore; "
                  "needs boto3, AWS_ENDPOINT_URL for S3-compatible stores).")


@click.command("init")
@click.argument("space", required=False, type=click.Path(dir_okay=False))
@click.option("--storage", required=True, help=STORAGE_HELP + " PostgreSQL for several workers.")
@click.option("--study", "study_name", required=True, help="Study name the workers join.")
@click.option("--workload", default="fashion-mnist-cnn", show_default=True,
              help="Built-in name (see `list`) or package.module:factory; every worker rebuilds it.")
@click.option("--data-dir", default=None, help="Folder with the Fashion-MNIST *-ubyte.gz files.")
@click.option("--target", default="host-cpu", show_default=True, help="Latency target (see `targets`).")
@click.option("--artifacts", default=None, help=ARTIFACTS_HELP)
@FAULT_OPTIONS[1]
@FAULT_OPTIONS[2]
def init_cmd(space: str | None, storage: str, study_name: str, workload: str, data_dir: str | None,
             target: str, artifacts: str | None, db_retries: int, db_max_wait_s: float) -> None:
    """Create a study for workers: store the space, the workload and the base model (made once)."""
    from lepton_search import SearchSpace
    from lepton_search.faults import ReconnectSettings
    from lepton_search.storage import redact
    from lepton_search.workers import init_study

    _quiet_optuna()
    reconnect = ReconnectSettings(retries=db_retries, max_wait_s=db_max_wait_s)  # checked before anything is read
    space_obj = SearchSpace.from_yaml(space) if space else None  # None: the default of the workload's kind
    init_study(storage, study_name, space_obj, workload=workload, data_dir=data_dir, target=target,
               artifacts=artifacts, reconnect=reconnect)
    click.echo(f"next, on any machine that reaches the storage and the artifact store:\n"
               f"  lepton-search worker --storage '{redact(storage)}' --study {study_name} --trials N"
               + (f" --artifacts {artifacts}" if artifacts else ""))


@click.command("worker")
@click.option("--storage", required=True, help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="A study made by `lepton-search init`.")
@click.option("--trials", type=int, default=None,
              help="COMPLETE trials this worker runs (default: until the study reaches the space's `trials`).")
@click.option("--artifacts", default=None, help=ARTIFACTS_HELP + " Default: the one `init` used.")
@click.option("--data-dir", default=None, help="Where this machine keeps the data set, if not where init had it.")
@click.option("--seed", type=int, default=None, help="Sampler seed of this worker (default: random per worker).")
@click.option("--heartbeat-interval", type=int, default=20, show_default=True, help="Seconds between heartbeats.")
@click.option("--grace-period", type=int, default=60, show_default=True,
              help="Seconds without a heartbeat after which a running trial is stale and retried.")
@click.option("--max-retry", type=int, default=2, show_default=True, help="Retries of one stale trial, at most.")
@FAULT_OPTIONS[0]
@FAULT_OPTIONS[1]
@FAULT_OPTIONS[2]
def worker_cmd(storage: str, study_name: str, trials: int | None, artifacts: str | None, data_dir: str | None,
               seed: int | None, heartbeat_interval: int, grace_period: int, max_retry: int, grace_s: float,
               db_retries: int, db_max_wait_s: float) -> None:
    """Join a study and run trials; start as many as you like, on as many machines."""
    from lepton_search.storage import HeartbeatSettings
    from lepton_search.workers import run_worker

    _quiet_optuna()
    if trials is not None and trials < 1:
        raise ConfigError("--trials", trials, "must be >= 1 (COMPLETE trials for this worker)")
    heartbeat = HeartbeatSettings(interval_s=heartbeat_interval, grace_period_s=grace_period, max_retry=max_retry)
    reconnect = fault_settings(grace_s, db_retries, db_max_wait_s)
    report = run_worker(storage, study_name, n_trials=trials, artifacts=artifacts, data_dir=data_dir, seed=seed,
                        heartbeat=heartbeat, grace_s=grace_s, reconnect=reconnect)
    click.echo(f"worker: completed trials {report.completed}; pruned {len(report.pruned)}; "
               f"failed {len(report.failed)}; {report.seconds:.0f}s")
