"""Where a study lives: SQLite on one machine (the default), PostgreSQL for many workers.

Both go through Optuna's `RDBStorage` with heartbeats, so a worker killed mid-trial leaves a trial
that the next worker marks FAIL and re-queues with the same knobs (`RetryHeartbeatStaleTrialCallback`,
at most `max_retry` times: a trial that kills its process every time must not loop forever).

Example:
    >>> storage = open_storage("sqlite:///:memory:")
    >>> storage.heartbeat_interval
    20
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from lepton_search import records
from lepton_search.errors import ConfigError
from lepton_search.faults import DigestMismatch, DiskFull, is_connection_lost, is_disk_full
from lepton_search.logging import logger
from lepton_search.paths import AtomicFolder, file_sha256

DEFAULT_STORAGE = "sqlite:///lepton_search.db"
# SQLAlchemy backend names Optuna's RDBStorage supports.
SCHEMES = ("sqlite", "postgresql", "mysql")
URL_FIX = "use sqlite:///FILE.db (one machine) or postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB (many workers)"
SQLITE_MANY_WRITERS = (
    "note: SQLite serves one writer at a time, so several workers on one SQLite file wait on each other "
    "and may hit 'database is locked'; for more than one worker use PostgreSQL: "
    "postgresql+psycopg2://USER:PASSWORD@HOST:5432/DB (see docs/scale_out.md)"
)


@dataclass(frozen=True)
class HeartbeatSettings:
    """How often a running trial proves it is alive, and how a silent one is retried.

    A trial whose last heartbeat is older than `grace_period_s` is stale: the next worker that starts
    a trial marks it FAIL and queues a copy with the same params, up to `max_retry` times.
    """

    interval_s: int = 20
    grace_period_s: int = 60
    max_retry: int = 2

    def __post_init__(self) -> None:
        for name in ("interval_s", "grace_period_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, value, "must be a whole number of seconds >= 1")
        if self.grace_period_s <= self.interval_s:
            raise ConfigError("grace_period_s", self.grace_period_s,
                              f"must exceed the heartbeat interval ({self.interval_s} s), e.g. 3x it")
        if isinstance(self.max_retry, bool) or not isinstance(self.max_retry, int) or self.max_retry < 0:
            raise ConfigError("max_retry", self.max_retry, "must be an integer >= 0")


def backend(url: str) -> str:
    """The database kind of a storage URL ('sqlite', 'postgresql', ...); ConfigError when it is not one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("storage", url, URL_FIX)
    try:
        name = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        raise ConfigError("storage", url, URL_FIX) from None
    if name not in SCHEMES:
        raise ConfigError("storage", redact(url), f"unsupported database {name!r}; {URL_FIX}")
    return name


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse has no password to hide
        return url


def is_sqlite(url: str) -> bool:
    return isinstance(url, str) and url.startswith("sqlite:")


class _SteadyRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose heartbeat survives a database that goes away for a while: Optuna's heartbeat thread
    ends at the first error, and the trial would then be failed as stale once the database is back even though it
    still runs. A missed beat is skipped instead (the trial loop settles the trial itself, `study.run_trials`)."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            logger.debug(f"heartbeat of trial id {trial_id} missed: the database is unreachable")


def open_storage(url: str, heartbeat: HeartbeatSettings | None = None) -> RDBStorage:
    """An `RDBStorage` with heartbeats and stale-trial retry; a one-line ConfigError when unreachable."""
    heartbeat = heartbeat or HeartbeatSettings()
    kind = backend(url)
    if kind == "sqlite":
        # Wait for the write lock instead of failing at once when another process holds it.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if kind == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _SteadyRDBStorage(
                url, engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat.interval_s, grace_period=heartbeat.grace_period_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry),
            )
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy / driver errors come in many types
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise ConfigError("storage", redact(url), f"cannot open it ({type(exc).__name__}: {first}); "
                          "check host, port, user, password, database name and that the server runs") from None


class FolderArtifactStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's folder store (the dashboard and `download_artifact` take it as one), with writes atomic
    (temporary file + rename), sub-folders made as needed, and its folder public (`folder`); it can list its
    files, so the checkpoints in it are capped in size."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self.folder = Path(folder)
        self._files = AtomicFolder(self.folder)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._files.write(artifact_id, content_body)

    def entries(self, prefix: str) -> list[tuple[str, int, float]]:
        return self._files.entries(prefix)

    def touch(self, artifact_id: str) -> None:
        self._files.touch(artifact_id)


class TrialFiles:
    """A study's files in its Optuna artifact store, each upload recorded in the attr that names it.

    Trials: the ONNX file, its validation samples (`sample_inputs.npz`), `config.json`, `MODEL_CARD.md`; the
    study: the base model's ONNX file and samples, and (workers) its state_dict. `store` is any store Optuna's
    artifact API takes (folder, S3, GCS, a user's own); `checkpoints()` keeps fine-tuning checkpoints in it too.

    Example:
        >>> files = TrialFiles(artifact_store_for("sqlite:///:memory:", "/tmp/lepton_doc_artifacts"))
        >>> files.describe().endswith("lepton_doc_artifacts")
        True
    """

    def __init__(self, store: Any, *, where: str | None = None) -> None:
        self.store = store.store if isinstance(store, TrialFiles) else store
        self._where = where

    @classmethod
    def of(cls, store: Any) -> TrialFiles:
        """`store` as TrialFiles (itself when it is one already)."""
        return store if isinstance(store, TrialFiles) else cls(store)

    # Optuna's artifact-store protocol, so that TrialFiles goes wherever a store does
    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.store.write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)

    def upload(self, study_or_trial: Any, path: str | Path, *, storage: Any = None) -> str:
        """Upload one file as an artifact of a study or a running trial, its SHA-256 recorded on it; returns its id.

        A full disk (ENOSPC) first evicts the cached fine-tuning checkpoints (any trial can retrain them) and tries
        once more; then `DiskFull`, one line. The store writes whole files, so nothing half-written stays."""
        sha256 = file_sha256(path)
        try:
            artifact_id = self._upload_once(study_or_trial, path, storage)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            freed = self.checkpoints().evict(max_mb=0.0)
            if not freed:
                raise DiskFull(self.describe(), f"writing {Path(path).name}: {exc.strerror}") from None
            logger.warning(f"artifacts: no space left writing {Path(path).name} in {self.describe()}; evicted "
                           f"{len(freed)} cached fine-tuning checkpoints (reproducible) and trying again")
            try:
                artifact_id = self._upload_once(study_or_trial, path, storage)
            except OSError as again:
                if not is_disk_full(again):
                    raise
                raise DiskFull(self.describe(), f"writing {Path(path).name}, even after evicting "
                               f"{len(freed)} cached checkpoints: {again.strerror}") from None
        records.set_artifact_digest(study_or_trial, artifact_id, sha256)
        return artifact_id

    def _upload_once(self, study_or_trial: Any, path: str | Path, storage: Any) -> str:
        return optuna.artifacts.upload_artifact(study_or_trial=study_or_trial, file_path=str(path),
                                                artifact_store=self.store, storage=storage)

    def _upload_to(self, trial: Any, attr: str, path: str | Path) -> str:
        artifact_id = self.upload(trial, path)
        records.set_artifact(trial, attr, artifact_id)
        return artifact_id

    def upload_onnx(self, trial: Any, path: str | Path) -> str:
        return self._upload_to(trial, records.ONNX_ARTIFACT, path)

    def upload_samples(self, trial: Any, path: str | Path) -> str:
        return self._upload_to(trial, records.SAMPLE_INPUTS_ARTIFACT, path)

    def upload_config(self, trial: Any, path: str | Path) -> str:
        return self._upload_to(trial, records.CONFIG_ARTIFACT, path)

    def upload_card(self, trial: Any, path: str | Path) -> str:
        return self._upload_to(trial, records.CARD_ARTIFACT, path)

    def upload_base_state(self, study: Any, path: str | Path, *, storage: Any = None) -> str:
        """The base model's state_dict (workers' init), recorded last: its presence means "initialised"."""
        artifact_id = self.upload(study, path, storage=storage)
        records.set_base_state_artifact(study, artifact_id)
        return artifact_id

    def download(self, artifact_id: str, path: str | Path, *, owners: Any = ()) -> Path:
        """Write artifact `artifact_id` to `path` (overwritten); returns `path`. The file is checked against the
        SHA-256 the first of `owners` (the trial, then the study) recorded at upload: a mismatch removes it and
        raises `DigestMismatch` naming the stored file. Nothing recorded (a study from before digests): unchecked."""
        path = Path(path)
        path.unlink(missing_ok=True)  # Optuna's download_artifact refuses an existing file
        optuna.artifacts.download_artifact(artifact_store=self.store, file_path=str(path), artifact_id=artifact_id)
        recorded = records.artifact_digest(artifact_id, *owners)
        if recorded is not None:
            got = file_sha256(path)
            if got != recorded:
                path.unlink(missing_ok=True)  # never left where a caller could read it
                raise DigestMismatch(f"{self.describe()}/{artifact_id} ({path.name})", got, recorded)
        return path

    def download_trial_file(self, trial: Any, attr: str, path: str | Path, *, study: Any = None) -> Path | None:
        """The trial's file stored under `attr` (`records.ONNX_ARTIFACT`, ...) at `path`, checked against its
        recorded digest (the trial's, else `study`'s: the base's samples); None when it has none."""
        artifact_id = records.artifact(trial, attr)
        return None if artifact_id is None else self.download(artifact_id, path, owners=(trial, study))

    def checkpoints(self, *, max_mb: float = 2048.0) -> Any:
        """Fine-tuning checkpoints kept in this store under `checkpoints/`, shared by every worker that reaches it."""
        from lepton_search.techniques.checkpoints import CheckpointStore  # torch: only when a search runs

        return CheckpointStore(self.store, prefix="checkpoints/", max_mb=max_mb)

    def describe(self) -> str:
        """A path or bucket to print, so a user knows where the files went."""
        if self._where is not None:
            return self._where
        folder = getattr(self.store, "folder", None)
        if folder is not None:
            return str(Path(folder).resolve())
        bucket = getattr(self.store, "bucket", None)  # Boto3ArtifactStore keeps its bucket name public
        return f"s3://{bucket}" if bucket else type(self.store).__name__


def open_artifact_store(spec: str | Path | None, storage_url: str) -> TrialFiles:
    """Where ONNX files, the base model and checkpoints go: a folder every worker reaches, or `s3://BUCKET`.

    S3 (or an S3-compatible store: set `AWS_ENDPOINT_URL`) goes through Optuna's `Boto3ArtifactStore`
    and needs `pip install boto3`; credentials come from the usual AWS environment.
    """
    if isinstance(spec, str) and spec.startswith("s3://"):
        bucket = spec.removeprefix("s3://").strip("/")
        if not bucket or "/" in bucket:
            raise ConfigError("artifacts", spec, "give a bucket only: s3://BUCKET (no key prefix)")
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ConfigError("artifacts", spec, "S3 artifacts need boto3: pip install boto3") from None
        return TrialFiles(optuna.artifacts.Boto3ArtifactStore(bucket), where=f"s3://{bucket}")
    if spec is not None:
        from lepton_search.paths import confined_dir

        spec = confined_dir("artifacts", spec)
    return TrialFiles(artifact_store_for(storage_url, spec))


def artifact_store_for(storage: str, artifacts: str | Path | None = None) -> FolderArtifactStore:
    """Artifacts live in `artifacts`, else beside a SQLite file (`<db>_artifacts/`), else `./lepton_artifacts`.
    A folder this process cannot write to is refused in one line, before any training."""
    if artifacts is None:
        if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
            db = Path(storage.removeprefix("sqlite:///"))
            artifacts = db.with_name(db.stem + "_artifacts")
        else:
            artifacts = Path("lepton_artifacts")
    path = Path(artifacts)
    check_writable("artifacts", path)
    return FolderArtifactStore(path)


def check_writable(field: str, folder: Path) -> None:
    """Make `folder` and write a file in it, or raise a one-line ConfigError naming it."""
    import os
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lepton_write_check_", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(str(folder), exc.strerror or "ENOSPC") from None
        raise ConfigError(field, str(folder), f"cannot write there ({exc.strerror or type(exc).__name__}); "
                          "give a folder this user can write to (or fix its permissions)") from None


def checkpoint_store(artifact_store: Any) -> Any:
    """Fine-tuning checkpoints in the study's artifact store (`checkpoints/`), whatever store it is: a folder's
    `<artifacts>/checkpoints`, an S3 bucket's `checkpoints/` keys."""
    return TrialFiles.of(artifact_store).checkpoints()


def describe_artifact_store(store: Any) -> str:
    """A path or bucket to print, so a user knows where the files went."""
    return TrialFiles.of(store).describe()
