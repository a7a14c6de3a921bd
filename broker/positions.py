"""Where a subscription starts in the log: :class:`StartSpec` and :func:`start_after`.

Example::

    after = start_after(StartSpec(broker_pb2.START_POLICY_ALL), head)  # 0: from the start
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from broker.errors import InvalidStart
from broker.ids import id_for_time_ms, time_ms_of
from broker.v1 import broker_pb2

__all__ = ["FROM_NEW", "StartSpec", "replays", "start_after"]


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
