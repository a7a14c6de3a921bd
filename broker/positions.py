"""Where a subscription starts in the log: :class:`StartSpec`, :func:`start_after` (as an
event id), :func:`log_position` (as a position in the log's commit order), and the one text
syntax of a start (:func:`parse_start`) that the CLI, HTTP and WebSocket read.

Example::

    after = start_after(StartSpec(broker_pb2.START_POLICY_ALL), head)  # 0: from the start
    parse_start("after:385993896867397632").after_id  # 385993896867397632
    position = await log_position(store, after)  # LogPosition(0, 0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lockgate.broker.errors import InvalidStart
from lockgate.broker.ids import id_for_time_ms, parse_decimal, time_ms_of
from lockgate.broker.store import EventLog, LogPosition
from lockgate.broker.v1 import broker_pb2
from lockgate.policy.durations import TimeError, parse_time_ms

__all__ = [
    "FROM_NEW",
    "START_SYNTAX",
    "StartSpec",
    "log_position",
    "parse_start",
    "replays",
    "start_after",
]


@dataclass(frozen=True, slots=True)
class StartSpec:
    policy: int = 0  # broker_pb2.StartPolicy
    since_ms: int = 0
    after_id: int = 0


FROM_NEW = StartSpec()
"""The default start: new events only (or, for a durable that exists, where it stopped)."""


def replays(start: StartSpec) -> bool:
    """Whether ``start`` reaches back into the stored log (anything but "new events")."""
    return start.policy not in (broker_pb2.START_POLICY_UNSPECIFIED, broker_pb2.START_POLICY_NEW)


def start_after(start: StartSpec, head: int) -> int:
    """The id after which a subscription starting at ``start`` begins, given the log's
    ``head`` (the highest id assigned); :class:`InvalidStart` when ``start`` makes no sense."""
    policy = start.policy
    if policy in (broker_pb2.START_POLICY_UNSPECIFIED, broker_pb2.START_POLICY_NEW):
        return head
    if policy == broker_pb2.START_POLICY_ALL:
        return 0
    if policy == broker_pb2.START_POLICY_SINCE_TIME:
        if start.since_ms <= 0:
            raise InvalidStart("since_time must be set for START_POLICY_SINCE_TIME")
        if start.since_ms > time.time() * 1000 + 60_000:
            raise InvalidStart(
                "since_time lies in the future", hint="give a time in the past, or use NEW"
            )
        return max(0, id_for_time_ms(start.since_ms) - 1)
    if policy == broker_pb2.START_POLICY_AFTER_ID:
        if start.after_id <= 0:
            raise InvalidStart("after_id must be set for START_POLICY_AFTER_ID")
        if start.after_id > head and time_ms_of(start.after_id) > time.time() * 1000:
            raise InvalidStart(
                f"after_id {start.after_id} lies in the future",
                hint="use an id the broker returned",
            )
        return start.after_id
    raise InvalidStart(f"start policy {policy} is unknown")


START_SYNTAX = "new, all, after:<id>, since:<time> or a time (-1h, 2026-01-02T03:04:05Z)"
"""How a start is written, for help texts and hints."""


def parse_start(text: str, *, now: float | None = None) -> StartSpec:
    """A start written as text: ``new``, ``all``, ``after:<id>`` (events after that id;
    ``id:<id>`` is read too, the CLI's old spelling), ``since:<time>`` or a bare time (events
    since then), where a time is :func:`policy.durations.parse_time`'s (``-1h``, ``-2d``, RFC
    3339, a date, unix milliseconds). Raises :class:`InvalidStart`.

    >>> parse_start("all") == StartSpec(broker_pb2.START_POLICY_ALL)
    True
    >>> parse_start("since:-1h", now=7200.0).since_ms
    3600000
    """
    t = text.strip()
    word = t.lower()
    if word in ("", "new"):
        return StartSpec(broker_pb2.START_POLICY_NEW)
    if word == "all":
        return StartSpec(broker_pb2.START_POLICY_ALL)
    kind, colon, rest = word.partition(":")
    if colon and kind in ("after", "id"):
        if not parse_decimal(rest, 2**64 - 1):
            raise InvalidStart(f"start {text!r} needs an event id after {kind}:", hint=START_SYNTAX)
        return StartSpec(broker_pb2.START_POLICY_AFTER_ID, after_id=int(rest))
    when = t[len("since:") :] if colon and kind == "since" else t
    try:
        ms = parse_time_ms(when, now=now)
    except TimeError:
        raise InvalidStart(f"start {text!r} is not a start position", hint=START_SYNTAX) from None
    if ms <= 0:
        raise InvalidStart(f"start {text!r} lies before 1970", hint=START_SYNTAX)
    return StartSpec(broker_pb2.START_POLICY_SINCE_TIME, since_ms=ms)


async def log_position(log: EventLog, after_id: int, org: str = "") -> LogPosition:
    """The log position a subscription of ``org`` that starts after event ``after_id`` (as
    :func:`start_after` gives it) reads from: the log is read in commit order, and a batch
    may commit after one with larger ids."""
    if after_id <= 0:
        return LogPosition(0)
    return await log.position_after_id(after_id, org)
