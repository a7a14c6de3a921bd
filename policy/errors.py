"""Errors of the policy language.

Exception tree::

    Exception
    ├── PolicyError        one problem at file:line:column (severity "error" or "warning")
    └── PolicyErrors       every error found while loading a set (``.errors``, ``.warnings``)

``str(PolicyError)`` renders the compiler-style message::

    billing.policy:4:31: error: cannot compare a number with a string
      deny publish when event.data.amount > "10"
                                          ^
      hint: write the number without quotes
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["PolicyError", "PolicyErrors"]


class PolicyError(Exception):
    """One problem in a policy source, with its position and a hint on what to do."""

    def __init__(
        self,
        file: str,
        line: int,
        column: int,
        message: str,
        hint: str = "",
        source_line: str = "",
        severity: str = "error",
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint
        self.source_line = source_line
        self.severity = severity
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
        parts = [head]
        if self.source_line:
            line, caret = _window(self.source_line.rstrip("\n"), max(self.column - 1, 0))
            parts.append("  " + line)
            parts.append("  " + " " * caret + "^")
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (
            f"PolicyError({self.file!r}, {self.line}, {self.column}, {self.message!r}, "
            f"severity={self.severity!r})"
        )

    def with_source(self, text: str) -> PolicyError:
        """Fill ``source_line`` from the full source ``text`` (returns self)."""
        lines = _lines(text)
        if 1 <= self.line <= len(lines):
            self.source_line = lines[self.line - 1]
            self.args = (self.render(),)
        return self


_WINDOW = 72
"""Characters of a long source line shown on each side of the caret."""


def _window(line: str, caret: int) -> tuple[str, int]:
    """The part of ``line`` around ``caret`` and the caret's place in it: a line of 200,000
    characters (a generated or hostile set) would otherwise be copied into every message,
    and a gRPC status that large is refused by the caller's transport, reason and all."""
    if len(line) <= 2 * _WINDOW + 16:
        return line, caret
    start = max(0, caret - _WINDOW)
    end = min(len(line), caret + _WINDOW)
    head = "…" if start > 0 else ""
    tail = "…" if end < len(line) else ""
    return head + line[start:end] + tail, caret - start + len(head)


@functools.lru_cache(maxsize=4)
def _lines(text: str) -> list[str]:
    # A set's warnings all split the same file: once, not once per warning (1,500 warnings
    # on a 1 MiB file split it 1,500 times: seconds).
    return text.splitlines()


class PolicyErrors(Exception):
    """All the errors (and warnings) found in a policy set; it did not load."""

    def __init__(self, errors: Iterable[PolicyError], warnings: Sequence[PolicyError] = ()) -> None:
        self.errors: list[PolicyError] = sorted(errors, key=_order)
        self.warnings: list[PolicyError] = sorted(warnings, key=_order)
        n = len(self.errors)
        summary = f"{n} error{'s' if n != 1 else ''} in policies"
        super().__init__(summary + "\n" + "\n".join(e.render() for e in self.errors))

    def __iter__(self) -> Iterator[PolicyError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


def _order(e: PolicyError) -> tuple[str, int, int]:
    return (e.file, e.line, e.column)
