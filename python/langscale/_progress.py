"""A small progress bar on stderr (no dependency): label, bar, count, rate, elapsed."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """``with Progress("label", total) as bar: ... bar.advance()``; redraws at most 20 times/s."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.width = width
        self.stream = stream if stream is not None else sys.stderr
        self._start = time.perf_counter()
        self._last_draw = 0.0
        # Redraw in place on a terminal; elsewhere (logs, CI) write the final line only.
        self._live = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> Progress:
        if self._live:
            self._draw(force=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self._live and not force:
            return
        if not force and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        elapsed = now - self._start
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self.stream.write(
            f"\r{self.label:<22} [{bar}] {self.done:>5}/{self.total:<5} "
            f"{rate:7.1f}/s {elapsed:6.1f}s"
        )
        self.stream.flush()
