"""A one-line progress bar on stderr for long CLI work (history export, dead-letter redrive,
policy replay), drawn only when stderr is a terminal: piped or redirected, nothing is
written, so scripts and logs see the command's output alone.

The client's dependencies are grpcio and protobuf only, so this is a small renderer of its
own rather than ``rich`` or ``tqdm``. It redraws at most every ``interval`` seconds (a
redraw is a few microseconds; most ``advance`` calls only add).

Example::

    with Progress("export", total=None) as bar:
        for event in events:
            write(event)
            bar.advance()
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30


class Progress:
    """``label``, a bar when ``total`` is known (else a count), and the rate."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._out = sys.stderr if stream is None else stream
        isatty = getattr(self._out, "isatty", None)
        self.shown = bool(isatty is not None and isatty())
        self._interval = interval
        self._started = time.monotonic()
        self._drawn = float("-inf")  # the first advance draws

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.shown:
            now = time.monotonic()
            if now - self._drawn >= self._interval:
                self._draw(now)

    def close(self) -> None:
        """Draws the final figures and ends the line (nothing off a terminal)."""
        if self.shown:
            self._draw(time.monotonic())
            self._out.write("\n")
            self._out.flush()
            self.shown = False

    def line(self, now: float) -> str:
        """The text of the bar at ``now`` (``time.monotonic``)."""
        elapsed = max(now - self._started, 1e-9)
        rate = f"{self.done / elapsed:,.0f}/s"
        if self.total:
            part = min(self.done / self.total, 1.0)
            filled = int(part * _WIDTH)
            bar = "#" * filled + "." * (_WIDTH - filled)
            return f"{self.label} [{bar}] {part:4.0%} {self.done:,}/{self.total:,} {rate}"
        return f"{self.label} {self.done:,} {rate}"

    def _draw(self, now: float) -> None:
        self._drawn = now
        self._out.write("\r\x1b[K" + self.line(now))  # back to the start, clear the line
        self._out.flush()
