"""One root exception; the CLI turns it into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LeptonError(Exception):
    """Root of every error lepton_search raises on purpose."""


class ConfigError(LeptonError, ValueError):
    """A user-supplied value is wrong. The message names the field, the value and the fix."""

    def __init__(self, field: str, value: object, fix: str) -> None:
        self.field, self.value, self.fix = field, value, fix
        super().__init__(f"{field}: got {value!r}; {fix}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return 'known: a, b, c (did you mean 'x'?)' for an unknown-name message."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"known: {', '.join(known)}{hint}"
