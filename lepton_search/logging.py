"""The library's logger, its verbosity, progress lines, and third-party chatter routed to it.

One named logger, "lepton_search" (the convention of `optuna.logging` and `transformers.logging`):

- Progress (a line per stage: prune, fine-tune epoch k of n, export, quantize, measure, with seconds; a line per
  trial) is logged at INFO. `search(verbose=True)`, `ModelOptimizer` and the CLI show INFO for their call;
  `verbose=False` / `--quiet` show warnings only, `--verbose` / `set_verbosity(logging.DEBUG)` everything.
  On a terminal or in a notebook the per-stage lines drop to DEBUG and tqdm bars (`tqdm.auto`: widgets in
  Jupyter) show the same progress instead.
- Where the records go: when the application configured logging (a handler on the root logger, e.g.
  `logging.basicConfig()`), there, formatted as it likes; otherwise to the current `sys.stderr` (the "last
  resort" handler below, also right in a notebook, whose kernel swaps `sys.stderr`).

`routed_to_debug()` wraps the calls into ONNX Runtime's quantizer, NNCF and torch's ONNX exporter, which
otherwise write into the user's output on every trial: ONNX Runtime's "Please consider to run pre-processing
before quantization" (a `logging.warning` on the root logger, which also calls `logging.basicConfig()` when the
root logger has no handler), NNCF's rich progress bars ("Statistics collection", "Applying Fast Bias
correction") and log lines, torch's tracer and `_pytree` warnings. Inside the block they go to the
"lepton_search" logger at DEBUG; records at ERROR and above, and every exception, pass through unchanged.

Example:
    >>> import logging
    >>> from lepton_search.logging import routed_to_debug, set_verbosity
    >>> with routed_to_debug():
    ...     logging.warning("third-party hint")   # logged as DEBUG on "lepton_search", not printed
    >>> set_verbosity(logging.WARNING)            # progress off for every later call, whatever `verbose` says
    >>> set_verbosity(None)                       # back to each call's `verbose`
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

LOGGER_NAME = "lepton_search"
# Loggers the wrapped calls write to: "" is the root logger (ONNX Runtime's quantizer calls logging.warning);
# NNCF's own (it has a stdout handler and does not propagate); torch's CUDA probe, which importing NNCF's torch
# backend triggers; torch's ONNX exporter.
# torch.utils._pytree: torchao (imported by transformers) registers enums there, and torch logs a deprecation
# for each through its own handler ("W1206 ... _pytree.py:630] <enum 'KernelPreference'> ...").
THIRD_PARTY_LOGGERS = ("", "nncf", "onnxruntime", "torch.onnx", "torch.utils.cpp_extension", "torch.utils._pytree")



class _CurrentStderr(logging.StreamHandler):
    """A stream handler on whatever `sys.stderr` is when a record comes (pytest's capture, a notebook's stream),
    used only while the application has configured no handler, on the root logger or on this one
    (`logging.lastResort`'s rule, at this logger's level instead of WARNING)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(lambda record: not _application_handles())

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


def _application_handles() -> bool:
    """A handler the application configured: on the root logger, or its own on this library's logger."""
    handlers = [*logging.getLogger().handlers, *logging.getLogger(LOGGER_NAME).handlers]
    return any(not isinstance(h, (logging.NullHandler, _CurrentStderr)) for h in handlers)


logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(_CurrentStderr())
_chosen_level: int | None = None  # set_verbosity's level: wins over each call's `verbose`


def get_logger() -> logging.Logger:
    """The "lepton_search" logger."""
    return logger


def set_verbosity(level: int | None) -> None:
    """Show this library's records from `level` up in every later call (`logging.INFO`: progress, `WARNING`:
    warnings only, `DEBUG`: also the third-party chatter routed here), whatever a call's `verbose` says;
    None: each call's `verbose` decides again."""
    global _chosen_level
    _chosen_level = level
    logger.setLevel(logging.NOTSET if level is None else level)


def get_verbosity() -> int | None:
    """The level `set_verbosity` chose (None: each call's `verbose` decides)."""
    return _chosen_level


# Packages whose own warnings (raised from their files) a call of this library routes to DEBUG: they warn about
# what this library does with them (torch-pruning's "Unwrapped parameters", torch's nested-tensor prototype note
# on every Transformer encoder's fast path), not about the user's code, which keeps its warnings.
THIRD_PARTY_PACKAGES = ("torch", "torch_pruning", "torchvision", "nncf", "onnx", "onnxruntime", "onnxscript",
                        "transformers", "optuna")


@functools.cache
def _third_party_roots() -> tuple[str, ...]:
    import importlib.util

    roots = []
    for name in THIRD_PARTY_PACKAGES:
        spec = importlib.util.find_spec(name)
        roots += [os.path.join(path, "") for path in (spec.submodule_search_locations or [])] if spec else []
    return tuple(roots)


@contextlib.contextmanager
def _third_party_warnings_to_debug() -> Iterator[None]:
    shown = warnings.showwarning

    def route(message: Any, category: type[Warning], filename: str, lineno: int, *args: Any, **kwargs: Any) -> None:
        if str(filename).startswith(_third_party_roots()):
            logger.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)
        else:
            shown(message, category, filename, lineno, *args, **kwargs)

    warnings.showwarning = route
    try:
        yield
    finally:
        warnings.showwarning = shown


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """For one public call: progress (INFO) when `verbose`, warnings only when not; a level the application set
    (`set_verbosity`, or `logger.setLevel` by hand, as pytest's `caplog.set_level` does) is left alone. Warnings
    that third-party packages raise from their own files (`THIRD_PARTY_PACKAGES`) go to DEBUG meanwhile."""
    with _third_party_warnings_to_debug():
        yield from _levelled(verbose)


def _levelled(verbose: bool) -> Iterator[None]:
    if _chosen_level is not None or logger.level not in (logging.NOTSET, _call_level[0]):
        yield
        return
    saved = logger.level, _call_level[0]
    _call_level[0] = logging.INFO if verbose else logging.WARNING
    logger.setLevel(_call_level[0])
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        _call_level[0] = saved[1]


_call_level = [logging.NOTSET]  # the level the innermost `verbosity` block set (an inner call may change it)


def verbose_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run `fn` under `verbosity(v)`, `v` its own `verbose` argument (given or default)."""
    signature = inspect.signature(fn)
    default = signature.parameters["verbose"].default

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = signature.bind_partial(*args, **kwargs).arguments.get("verbose", default)
        with verbosity(bool(verbose)):
            return fn(*args, **kwargs)

    return wrapper


def interactive() -> bool:
    """Whether progress can be drawn as bars: stderr is a terminal, or this runs in a Jupyter kernel (where
    `tqdm.auto` draws widgets)."""
    if sys.stderr.isatty():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def bars_shown() -> bool:
    """tqdm bars are drawn: an interactive output and progress on (INFO or below)."""
    return interactive() and logger.isEnabledFor(logging.INFO)


def stage_level() -> int:
    """The level of a per-stage progress line: INFO where no bar shows progress (log files, job runners, CI),
    DEBUG where one does."""
    return logging.DEBUG if interactive() else logging.INFO


_scope: contextvars.ContextVar[str] = contextvars.ContextVar("lepton_search_scope", default="")


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Prefix the stage lines logged inside the block with `name` (e.g. "trial 3 0.25/8/2")."""
    token = _scope.set(name)
    try:
        yield
    finally:
        _scope.reset(token)


def log_stage(message: str, *args: Any) -> None:
    """One progress line at `stage_level`, prefixed with the current `scope`."""
    if logger.isEnabledFor(stage_level()):
        prefix = _scope.get()
        logger.log(stage_level(), f"{prefix}: {message}" if prefix else message, *args)


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """Log `what` and the seconds it took, once it is done (`log_stage`); a failure logs nothing here.

    Example:
        >>> with stage("export"):
        ...     pass                      # logs "export 0.0 s" (at INFO off a terminal)
    """
    start = time.perf_counter()
    yield
    log_stage("%s %.1f s", what, time.perf_counter() - start)


class _ToDebug(logging.Filter):
    """A logger filter that re-logs records below ERROR on the library's logger at DEBUG and drops them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        logger.debug("%s %s: %s", record.name, record.levelname.lower(), record.getMessage())
        return False


@contextlib.contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """transformers' own progress bars (the GGUF reader draws two, save_pretrained one) off for the block, as they
    were after it."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


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
