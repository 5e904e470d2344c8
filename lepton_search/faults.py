"""Faults a long search meets, named: a file whose bytes changed, a full disk, a database that went away, a stop.

Each is one `LeptonError` with a one-line message (the CLI prints it and exits); `is_disk_full` and
`is_connection_lost` read an exception (and what caused it) so the trial loop can tell them from a
candidate's own failure.

Example:
    >>> is_disk_full(OSError(28, "No space left on device"))
    True
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

from lepton_search.errors import ConfigError, LeptonError


class DigestMismatch(ConfigError):
    """A stored file's bytes differ from the SHA-256 recorded when it was written."""

    def __init__(self, where: str, got: str, recorded: str) -> None:
        super().__init__("artifact", where, f"its SHA-256 is {got[:16]}..., {recorded[:16]}... was recorded when it "
                         "was written: the file changed since (a disk fault, a copy cut short, an edit); restore it "
                         "from a backup, or re-run the trial that wrote it")


class DiskFull(ConfigError):
    """A write hit ENOSPC (after cached checkpoints were evicted to make room)."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__("artifacts", where, f"no space left on its device ({detail}); free space there (or pass "
                         "another --artifacts) and run the same command again: the study resumes")


class DatabaseUnavailable(ConfigError):
    """The study's database did not answer within the reconnect bound."""


class Stopped(LeptonError):
    """The loop stopped on a signal; the study is consistent and resumes. `exit_code`: 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrialInterrupted(KeyboardInterrupt):
    """Raised in the trial when its grace period after a stop signal ran out (or on a second signal).

    A KeyboardInterrupt, so that no `except Exception` inside a trial swallows it, and Optuna fails the trial
    and re-raises it (it does so for KeyboardInterrupt)."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception that caused it) is ENOSPC / EDQUOT."""
    if any(isinstance(e, DiskFull) for e in _chain(exc)):
        return True
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _chain(exc))


_LOCKED = "database is locked"  # SQLite's busy writer: waited for already (60 s), reported on its own


def is_connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (refused, dropped, restarted), not a bad query.

    SQLAlchemy raises `OperationalError` / `InterfaceError` (or `DBAPIError` with `connection_invalidated`) for a
    lost server; Optuna wraps a failed commit in `StorageInternalError` with it as the cause."""
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - optuna's RDB storage needs SQLAlchemy
        return False
    for e in _chain(exc):
        if _LOCKED in str(e):
            return False
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
    return False
