"""What both exporters share (`export` for a plain forward, `generation` for a decoder with past key/values): the
opset and a silenced stdout while torch exports."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

OPSET = 17


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1: on failure torch's C++ side dumps whole graphs there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
