"""The library's logger, and third-party chatter routed to it.

One named logger, "lepton_search" (the convention of `optuna.logging` and `transformers.logging`). It has a
`NullHandler`, so the library prints nothing through it unless the application configures logging;
`logging.getLogger("lepton_search").setLevel(logging.DEBUG)` plus a handler shows everything.

`routed_to_debug()` wraps the calls into ONNX Runtime's quantizer, NNCF and torch's ONNX exporter, which
otherwise write into the user's output on every trial: ONNX Runtime's "Please consider to run pre-processing
before quantization" (a `logging.warning` on the root logger, which also calls `logging.basicConfig()` when the
root logger has no handler), NNCF's rich progress bars ("Statistics collection", "Applying Fast Bias
correction") and log lines, torch's tracer and `_pytree` warnings. Inside the block they go to the
"lepton_search" logger at DEBUG; records at ERROR and above, and every exception, pass through unchanged.

Example:
    >>> import logging
    >>> from lepton_search.logging import routed_to_debug
    >>> with routed_to_debug():
    ...     logging.warning("third-party hint")   # logged as DEBUG on "lepton_search", not printed
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

LOGGER_NAME = "lepton_search"
# Loggers the wrapped calls write to: "" is the root logger (ONNX Runtime's quantizer calls logging.warning);
# NNCF's own (it has a stdout handler and does not propagate); torch's CUDA probe, which importing NNCF's torch
# backend triggers; torch's ONNX exporter.
THIRD_PARTY_LOGGERS = ("", "nncf", "onnxruntime", "torch.onnx", "torch.utils.cpp_extension")

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())


def get_logger() -> logging.Logger:
    """The "lepton_search" logger."""
    return logger


class _ToDebug(logging.Filter):
    """A logger filter that re-logs records below ERROR on the library's logger at DEBUG and drops them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        logger.debug("%s %s: %s", record.name, record.levelname.lower(), record.getMessage())
        return False


@contextlib.contextmanager
def routed_to_debug() -> Iterator[None]:
    """Route third-party log records, warnings and NNCF's progress bars to the "lepton_search" logger at DEBUG
    for the duration of the block (see the module docstring). Exceptions and records at ERROR and above pass
    through. Every warning raised inside the block is logged, not shown: wrap third-party calls only (the
    wrapped calls run no lepton_search code that warns; a warning's file and line, set by its `stacklevel`,
    cannot tell whose it is: torch's deprecation of its legacy exporter points at our call)."""
    root = logging.getLogger()
    # A root logger without handlers makes `logging.warning()` call `basicConfig()`, which would leave a stderr
    # handler on the application's root logger for good; a NullHandler for the block prevents that.
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    to_debug = _ToDebug()
    loggers = [logging.getLogger(name) for name in THIRD_PARTY_LOGGERS]
    for third_party in loggers:
        third_party.addFilter(to_debug)
    console, was_quiet = _rich_console()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        if console is not None:
            console.quiet = was_quiet
        for third_party in loggers:
            third_party.removeFilter(to_debug)
        if placeholder is not None:
            root.removeHandler(placeholder)
        for w in caught:
            _log_warning(w)


def _log_warning(w: warnings.WarningMessage) -> None:
    logger.debug("%s: %s (%s:%s)", w.category.__name__, w.message, w.filename, w.lineno)


def _rich_console() -> tuple[Any, bool]:
    """The rich console NNCF's progress bars draw on (rich's global one), made quiet for the block. NNCF 3.4 has
    no switch for its bars (`nncf.common.logging.track_progress.track` takes `disable`, but NNCF's algorithms do
    not pass it), and they do not go through logging; `Console.quiet` is rich's public way to drop output."""
    try:
        import rich
    except ImportError:  # no NNCF installed either: nothing draws bars
        return None, False
    console = rich.get_console()
    was_quiet = console.quiet
    console.quiet = True
    return console, was_quiet
