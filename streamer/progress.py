"""A dependency-free progress display on stderr: a redrawn bar on a terminal, a line every few
seconds otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, label: str, total: int | None = None, *, unit: str = "", stream: TextIO | None = None,
                 enabled: bool = True, every_s: float = 5.0) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self.every_s = every_s if not self.tty else 0.1
        self.n = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.extra = ""

    def update(self, n: int = 1, *, extra: str = "") -> None:
        self.n += n
        if extra:
            self.extra = extra
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every_s:
            self._last = now
            self._draw(end="\r" if self.tty else "\n")

    def _draw(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            frac = min(self.n / self.total, 1.0)
            bar = "#" * int(frac * 24)
            text = f"{self.label} [{bar:<24}] {self.n}/{self.total} {self.unit} {frac:5.1%} {rate:,.0f}/s"
        else:
            text = f"{self.label} {self.n} {self.unit} {rate:,.0f}/s"
        if self.extra:
            text += f" {self.extra}"
        self.stream.write(text + (" " * 4) + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(end="\n")
