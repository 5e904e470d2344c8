"""What moved since the lock: each installed package whose version differs from requirements.lock's pin.

`make test-latest` runs it in its venv of newest releases, before the fast tests, so a failure there comes with
the list of releases that could have caused it. Prints a table; always exits 0 (the tests decide).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str = "requirements.lock") -> int:
    pins = {_norm(m[1]): m[2] for line in Path(lock).read_text().splitlines() if (m := PIN.match(line))}
    installed = {_norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    moved = sorted((n, pins[n], installed[n]) for n in pins if n in installed and installed[n] != pins[n])
    missing = sorted(n for n in pins if n not in installed)
    print(f"{len(moved)} of {len(pins)} locked packages have other releases installed here (newest allowed):")
    for name, locked, now in moved:
        print(f"  {name:<32} {locked:>14} -> {now}")
    if missing:
        print(f"not installed here (no longer required?): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
