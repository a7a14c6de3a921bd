"""The CLI's progress bar: drawn on a terminal, nothing written otherwise."""

from __future__ import annotations

import io

from lockgate.clients._progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_written_off_a_terminal() -> None:
    out = io.StringIO()
    with Progress("export", 10, stream=out) as bar:
        bar.advance(10)
    assert not bar.shown and out.getvalue() == ""


def test_a_bar_with_a_total_and_a_count_without() -> None:
    out = _Terminal()
    with Progress("redrive", 4, stream=out, interval=0.0) as bar:
        bar.advance(1)
        assert "[" + "#" * 7 + "." * 23 + "]  25% 1/4" in out.getvalue()
        bar.advance(3)
    final = out.getvalue().split("\r\x1b[K")[-1]
    assert final.startswith("redrive [" + "#" * 30 + "] 100% 4/4 ") and final.endswith("/s\n")
    out = _Terminal()
    with Progress("history", stream=out, interval=3600.0) as bar:
        for _ in range(1500):
            bar.advance()
    lines = out.getvalue().split("\r\x1b[K")
    assert len(lines) == 3  # the first advance draws, then only the close (interval)
    assert lines[-1].startswith("history 1,500 ")
