"""Step 3 of the publish path: the broker's side of the policy engine.

``PolicyGate`` holds the running :class:`policy.PolicySet` (swapped atomically on reload),
turns CloudEvents into the engine's ``Request`` and the engine's ``Decision`` into broker
errors, and applies the effects that need I/O (limits, routes, dedup by key).
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.auth import Principal
from broker.errors import BrokerError
from broker.v1 import cloudevent_pb2

__all__ = ["PolicyGate"]


class PolicyGate:
    """With no policy set loaded every action is allowed and ``active`` is False, so the
    publish path pays nothing for the engine."""

    active = False
    version = "none"

    async def admit(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[cloudevent_pb2.CloudEvent],
        indexes: Sequence[int],
        action: str = "publish",
    ) -> tuple[dict[int, BrokerError], dict[int, list[tuple[str, str]]]]:
        """Decides each event at ``indexes``: rejections by index, and routes by index as
        ``(subject, "copy" | "redirect")``. May add tags to the events in place."""
        return {}, {}

    def check_subscribe(self, principal: Principal, pattern: str) -> BrokerError | None:
        return None
