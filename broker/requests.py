"""Request/reply: a request goes over the backbone to the subscribers of its subject with a
private ``$inbox.…`` subject, and the first reply published there answers it, whichever node
the responder is connected to. Neither is stored.

Example::

    reply = await requests.request(principal, "tools.weather", event, timeout=5.0)
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.backbone import Backbone
from lockgate.broker.config import Config
from lockgate.broker.errors import DeadlineExceeded, EventTooLarge, NotFound
from lockgate.broker.pipeline import check_event
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.subjects import validate_subject
from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["Requests"]

CloudEvent = cloudevent_pb2.CloudEvent


def _expire(fut: asyncio.Future[CloudEvent], subject: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(
            DeadlineExceeded(
                f"no reply on {subject!r} within {timeout:g} s",
                reason="REQUEST_TIMEOUT",
                hint="raise the timeout, or check that the responder replies to reply_to",
            )
        )


class Requests:
    """The open requests of one node, by ``(org, inbox)``."""

    def __init__(
        self,
        config: Config,
        gate: PolicyGate,
        backbone: Backbone,
        node_id: str,
        next_id: Callable[[], int],
    ) -> None:
        self.config = config
        self.gate = gate
        self.backbone = backbone
        self.node_id = node_id
        self._next_id = next_id
        self._inboxes: dict[tuple[str, str], asyncio.Future[CloudEvent]] = {}

    async def request(
        self,
        principal: Principal,
        subject: str,
        event: CloudEvent,
        timeout: float,
    ) -> CloudEvent:
        """Sends ``event`` to one responder on ``subject`` and waits for its reply."""
        validate_subject(subject)
        err = check_event(event)
        if err is None and self.gate.active:
            verdicts = await self.gate.admit(principal, subject, [event], [0], "request")
            err = verdicts.rejected.get(0)
        if err is not None:
            raise err
        raw = event.SerializeToString()
        if len(raw) > self.config.max_event_bytes:
            raise EventTooLarge(len(raw), self.config.max_event_bytes)
        org = principal.org
        # The inbox names this node, so a reply published on any node finds its way here.
        inbox = f"$inbox.{self.node_id}.{secrets.token_hex(8)}"
        fut: asyncio.Future[CloudEvent] = asyncio.get_running_loop().create_future()
        self._inboxes[(org, inbox)] = fut
        try:
            event_id = self._next_id()
            frame = wire.delivery_frame(event_id, wire.subject_field(subject), raw, 1, inbox)
            if not await self.backbone.request(self.node_id, org, subject, frame, [event_id]):
                raise NotFound(
                    f"no subscriber listens on {subject!r}",
                    reason="NO_RESPONDERS",
                    hint="start a responder that subscribes to this subject",
                )
            # A timer on the future, not wait_for: one handle per request, no extra future.
            expiry = asyncio.get_running_loop().call_later(timeout, _expire, fut, subject, timeout)
            try:
                return await fut
            finally:
                expiry.cancel()
        finally:
            self._inboxes.pop((org, inbox), None)

    def reply(self, org: str, inbox: str, event: CloudEvent) -> bool:
        """Answers the request waiting on ``inbox`` here; False when none waits (a late
        reply, or a request of another node)."""
        fut = self._inboxes.get((org, inbox))
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(event)
        return True
