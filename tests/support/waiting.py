"""Wait on an observable with a deadline instead of a fixed sleep.

A fixed sleep is too short on a loaded machine (the test flakes) and too long everywhere else
(the suite crawls). ``eventually`` polls a condition, returns as soon as it holds, and when the
deadline passes fails with what it last saw.

>>> await eventually(lambda: len(received) == 3)                  # doctest: +SKIP
>>> stored = await eventually(lambda: query(subject), timeout=5)  # doctest: +SKIP

An ABSENCE ("nothing else arrives") is not a condition to poll: prove the path ran instead,
e.g. publish a marker after the events that must not arrive and wait for the marker.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually", "eventually_sync"]

T = TypeVar("T")

#: Long enough for a loaded two-core CI box; a passing wait returns as soon as it holds.
DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.02


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


async def eventually(
    predicate: Callable[[], Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
) -> Any:
    """Calls ``predicate`` (sync or async) until it returns a truthy value, and returns it.

    An ``AssertionError`` raised by the predicate means "not yet" (so the predicate may be a
    function of asserts); any other exception is a bug and propagates at once. When
    ``timeout`` seconds pass, fails with an ``AssertionError`` naming ``what`` (default: the
    predicate's source) and the last value or assertion seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = f"last value: {value!r}"
        except AssertionError as exc:
            last = f"last assertion: {exc}"
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(_timed_out(predicate, what, timeout, last))
        await asyncio.sleep(min(interval, remaining))


def eventually_sync(
    predicate: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str | None = None,
) -> T:
    """:func:`eventually` for code without an event loop (threads, subprocesses)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = f"last value: {value!r}"
        except AssertionError as exc:
            last = f"last assertion: {exc}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(_timed_out(predicate, what, timeout, last))
        time.sleep(min(interval, remaining))


def _timed_out(predicate: Callable[[], object], what: str | None, timeout: float, last: str) -> str:
    return f"not true within {timeout:g}s: {what or _describe(predicate)} ({last})"


def _describe(predicate: Callable[[], object]) -> str:
    """The predicate's source line when there is one (a lambda), else its name."""
    try:
        source = inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))
    return source if len(source) <= 200 else source[:197] + "..."
