"""A dependency-free progress bar: drawn on a terminal, silent otherwise (CI, notebooks, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class progress:
    """`bar = progress(total=n, desc="train"); bar.update(); bar.close()`."""

    def __init__(self, total: int, desc: str = "", stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total, self.desc, self.n = max(int(total), 1), desc, 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.start = self._last = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or self.n >= self.total):
            self._last = now
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 24)
            self.stream.write(f"\r{self.desc:<18} [{bar:<24}] {self.n}/{self.total} {now - self.start:5.0f}s")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
