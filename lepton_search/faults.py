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
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Self

from lepton_search.errors import ConfigError, LeptonError
from lepton_search.logging import logger


class DigestMismatch(ConfigError):
    """A stored file's bytes differ from the SHA-256 recorded when it was written."""

    def __init__(self, where: str, got: str, recorded: str) -> None:
        super().__init__("artifact", where, f"its SHA-256 is {got[:16]}..., {recorded[:16]}... was recorded when it "
                         "was written: the file changed since (a disk fault, a copy cut short, an edit); restore it "
                         "from a backup, or re-run the trial that wrote it")


class DiskFull(ConfigError):
    """A write hit ENOSPC (after cached checkpoints were evicted to make room), or the study's database could not
    grow (`field` "storage": SQLite's "database or disk is full")."""

    def __init__(self, where: str, detail: str, *, field: str = "artifacts") -> None:
        other = "another --artifacts" if field == "artifacts" else "a --storage on another disk"
        super().__init__(field, where, f"no space left on its device ({detail}); free space there (or pass "
                         f"{other}) and run the same command again: the study resumes")


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


# SQLite's SQLITE_FULL (sqlite3.OperationalError, wrapped by SQLAlchemy and Optuna): the file cannot grow
_DATABASE_FULL = "database or disk is full"


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or an exception that caused it) is ENOSPC / EDQUOT, or SQLite's "database or disk is full"."""
    if any(isinstance(e, DiskFull) for e in _chain(exc)):
        return True
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in _chain(exc)) \
        or is_database_full(exc)


def is_database_full(exc: BaseException) -> bool:
    """Whether the study's database said it cannot grow (SQLite's "database or disk is full")."""
    return any(_DATABASE_FULL in str(e) for e in _chain(exc))


def as_disk_full(exc: BaseException, where: str) -> DiskFull:
    """`exc` (`is_disk_full`) as the one-line `DiskFull`: naming the database `where` when it was the database."""
    if isinstance(exc, DiskFull):
        return exc
    if is_database_full(exc):
        return DiskFull(where, f"the database could not grow: {_DATABASE_FULL}", field="storage")
    return DiskFull(str(getattr(exc, "filename", None) or where), first_line(exc, 160))


_LOCKED = "database is locked"  # SQLite's busy writer: waited for already (60 s), reported on its own
# PostgreSQL answered and refused the login: waiting does not change a password (libpq's messages)
_REFUSED_LOGIN = re.compile(r'password authentication failed|no pg_hba\.conf entry|(role|database) "[^"]*" does not exist')


def refused_login(exc: BaseException) -> str | None:
    """The server's words when `exc` says the database answered and refused this login (a wrong password, a user
    or database that does not exist, a host the server does not admit), else None.

    Example:
        >>> refused_login(Exception('FATAL:  password authentication failed for user "lepton"'))
        'password authentication failed for user "lepton"'
    """
    for e in reversed(list(_chain(exc))):  # the driver's own words first, not a wrapper's that quotes them
        for line in str(e).splitlines():
            if _REFUSED_LOGIN.search(line):
                return line.rpartition("FATAL:")[2].strip()[:160]
    return None


def is_connection_lost(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached (refused, dropped, restarted), not a bad query.

    SQLAlchemy raises `OperationalError` / `InterfaceError` (or `DBAPIError` with `connection_invalidated`) for a
    lost server; Optuna wraps a failed commit in `StorageInternalError` with it as the cause."""
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - optuna's RDB storage needs SQLAlchemy
        return False
    if refused_login(exc) is not None:  # it answered: no wait will let this login in
        return False
    for e in _chain(exc):
        if _LOCKED in str(e) or _DATABASE_FULL in str(e):  # the database answered: it is busy, or full
            return False
        if isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
    return False


def first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


@dataclass(frozen=True)
class ReconnectSettings:
    """How long a search or worker waits for its database to come back: `retries` tries, the first after
    `first_wait_s`, each wait doubled up to `max_wait_s` (defaults: 8 tries over about 2 minutes)."""

    retries: int = 8
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 1:
            raise ConfigError("db_retries", self.retries, "must be an integer >= 1: how many times to try the "
                              "database again before stopping (e.g. 8, about 2 minutes)")
        for name in ("first_wait_s", "max_wait_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(name, value, "must be a number of seconds > 0")
        if self.max_wait_s < self.first_wait_s:
            raise ConfigError("max_wait_s", self.max_wait_s, f"must be >= first_wait_s ({self.first_wait_s})")

    def waits(self) -> list[float]:
        return [min(self.first_wait_s * 2 ** i, self.max_wait_s) for i in range(self.retries)]


def wait_for_database(probe: Callable[[], Any], settings: ReconnectSettings, error: BaseException, *,
                      where: str) -> float:
    """Call `probe` after each of `settings.waits()` until it answers; return the seconds waited. Each try is
    logged; past the last, `DatabaseUnavailable` (one line: nothing is lost, run the command again)."""
    start = time.monotonic()
    last = error
    for attempt, wait_s in enumerate(settings.waits(), 1):
        logger.warning(f"database {where} unreachable ({first_line(last, 100)}); try {attempt}/{settings.retries} "
                       f"in {wait_s:.0f}s")
        time.sleep(wait_s)
        try:
            probe()
        except Exception as exc:
            if not is_connection_lost(exc):
                raise
            last = exc
            continue
        waited = time.monotonic() - start
        logger.warning(f"database {where} answers again after {waited:.0f}s; going on")
        return waited
    raise DatabaseUnavailable("storage", where, f"did not answer for {time.monotonic() - start:.0f}s "
                              f"({settings.retries} tries; last: {first_line(last, 100)}); nothing is lost (completed "
                              "trials are stored, the trial in flight runs again on resume): run the same command "
                              "once the database is back, or allow more tries (--db-retries)")


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PoliteStop:
    """SIGTERM / SIGINT while trials run: the first lets the running trial finish within `grace_s` (then it is
    interrupted: `TrialInterrupted` in the main thread), the second interrupts it at once. The caller checks
    `signum` between trials and stops; `disarm()` once the trial is over restores the default handlers, so a
    further signal acts as usual. Handlers are installed only in the main thread (the only one signals reach).

    Example:
        >>> with PoliteStop(grace_s=60) as stopping:
        ...     stopping.signum is None
        True
    """

    def __init__(self, grace_s: float) -> None:
        if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or grace_s < 0:
            raise ConfigError("grace_s", grace_s, "must be a number of seconds >= 0 (how long a running trial may "
                              "take to finish after SIGTERM / SIGINT)")
        self.grace_s = float(grace_s)
        self.signum: int | None = None
        self.expired = False
        self._old: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._done = False
        self._from_timer = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        self.disarm()
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            from_timer, self._from_timer = self._from_timer, False
        if self._done:
            if from_timer:
                return  # the grace timer fired as the trial ended: nothing left to interrupt
            raise SystemExit(128 + signum)  # a further signal while the loop flushes: stop at once
        if self.signum is None:
            self.signum = signum
            logger.warning(f"{self.name}: finishing the running trial (at most {self.grace_s:.0f}s), then stopping; "
                           "send it again to stop at once")
            self._timer = threading.Timer(self.grace_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
            return
        why = f"its {self.grace_s:.0f}s grace after {self.name} ran out" if from_timer else f"{self.name} again"
        raise TrialInterrupted(f"stopped: {why}")

    def _expire(self) -> None:
        with self._lock:
            if self._done or not self._old or self.signum is None:
                return
            self.expired = self._from_timer = True
            signal.pthread_kill(threading.main_thread().ident, self.signum)  # the handler raises in the trial

    def disarm(self) -> None:
        """The trial is over: no grace timer any more; a further signal exits at once (SystemExit 128 + signal)."""
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()


def answered(call: Callable[[], Any], settings: ReconnectSettings, where: str) -> Any:
    """`call()`; while the database is away, tried again after each of the reconnect waits (bounded, logged). A
    database that cannot grow (SQLite's "database or disk is full") is `DiskFull`, one line naming it."""
    try:
        return call()
    except Exception as exc:
        if is_database_full(exc):
            raise as_disk_full(exc, where) from None
        refused = refused_login(exc)
        if refused is not None:
            raise ConfigError("storage", where, f"the database refused the login ({refused}); check the user, "
                              "password and database name in the URL") from None
        if not is_connection_lost(exc):
            raise
        first = exc
    answers: list[Any] = []
    wait_for_database(lambda: answers.append(call()), settings, first, where=where)
    return answers[-1]
