"""Step 3 of the publish path: the broker's side of the policy engine.

``PolicyGate`` holds the running :class:`policy.PolicySet` (swapped atomically on reload),
turns CloudEvents into the engine's ``Request`` and the engine's ``Decision`` into broker
errors, and applies the effects that need I/O (limits, routes, dedup by key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from broker.auth import Principal
from broker.errors import BrokerError
from broker.v1 import cloudevent_pb2

if TYPE_CHECKING:
    from broker.core import Broker

__all__ = ["PolicyGate"]


class PolicyGate:
    """With no policy set loaded every action is allowed and ``active`` is False, so the
    publish path pays nothing for the engine."""

    active = False
    version = "none"

    def check_publish(
        self, principal: Principal, subject: str, event: cloudevent_pb2.CloudEvent
    ) -> BrokerError | None:
        return None

    def check_subscribe(self, principal: Principal, pattern: str) -> BrokerError | None:
        return None

    def check_request(
        self, principal: Principal, subject: str, event: cloudevent_pb2.CloudEvent
    ) -> BrokerError | None:
        return None

    async def after_publish(
        self,
        broker: Broker,
        principal: Principal,
        subject: str,
        events: Sequence[cloudevent_pb2.CloudEvent],
        accepted: Sequence[int],
    ) -> None:
        return None
