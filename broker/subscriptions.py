"""Who may subscribe to what, and the node's ephemeral (at-most-once) subscriptions.

Example::

    sub = await ephemerals.subscribe(principal, "orders.>", queue="", buffer=0)
    body = await sub.outbox.take()
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from lockgate.broker.auth import Principal
from lockgate.broker.bounds import check_setting
from lockgate.broker.config import Config
from lockgate.broker.delivery import EphemeralSubscription
from lockgate.broker.errors import BrokerError, ResourceExhausted
from lockgate.broker.history import History
from lockgate.broker.livesettings import LiveSettings
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.positions import FROM_NEW, StartSpec, log_position, replays, start_after
from lockgate.broker.quotas import OrgQuota
from lockgate.broker.router import Router
from lockgate.broker.store import EventLog, LogPosition
from lockgate.broker.subjects import check_subscribe_pattern
from lockgate.broker.telemetry import Telemetry

__all__ = ["Ephemerals", "check_pattern"]


def check_pattern(gate: PolicyGate, principal: Principal, pattern: str) -> None:
    """Raises unless ``principal`` may subscribe to ``pattern`` (ephemeral or durable)."""
    check_subscribe_pattern(pattern)
    if gate.conversations is not None and pattern.startswith("$conv."):
        # A conversation's subjects: its participants decide, not the policies (nor an
        # org's default deny, which no policy rule could lift for them).
        problem = gate.conversations.subscribe_problem(principal, pattern)
        if problem is not None:
            raise problem
        return
    if gate.active:
        err = gate.check_subscribe(principal, pattern)
        if err is not None:
            raise err


class _Budgeted:
    """A replay's sink: the subscriber's outbox, up to its byte budget. The replay runs
    before the subscriber reads anything, so a replay that would pass the budget is refused
    (``SLOW_CONSUMER``) instead of held whole in the broker's memory."""

    def __init__(self, sub: EphemeralSubscription, max_bytes: int) -> None:
        self.box = sub.outbox
        self.pattern = sub.pattern
        self.max_bytes = max_bytes

    def put(self, frames: bytes, count: int = 1) -> None:
        if self.box.bytes + len(frames) > self.max_bytes:
            raise ResourceExhausted(
                f"the replay of {self.pattern!r} holds more than the subscriber's budget of "
                f"{self.max_bytes} bytes",
                reason="SLOW_CONSUMER",
                hint="start later, read the log with QueryEvents, or use a durable "
                "subscription (it reads the log as it goes)",
                metadata={"max_bytes": str(self.max_bytes)},
            )
        self.box.put(frames, count)


class Ephemerals:
    """Adds ephemeral subscriptions to the router, replaying the log first when asked."""

    def __init__(
        self,
        config: Config,
        gate: PolicyGate,
        router: Router,
        history: History,
        telemetry: Telemetry,
        head: Callable[[], int],
        log: EventLog,
        quota: OrgQuota,
        live: LiveSettings | None = None,
    ) -> None:
        self.config = config
        self.live = live or LiveSettings(config)
        """The config store's running settings (the buffer of a new subscriber)."""
        self.quota = quota
        """Live subscriptions per org, shared with the durable streams."""
        self.events = log
        self.gate = gate
        self.router = router
        self.history = history
        self.telemetry = telemetry
        self._head = head
        self.log = logging.getLogger("lockgate.broker")
        self._live: set[EphemeralSubscription] = set()

    def count(self, org: str | None = None) -> int:
        """Live ephemeral subscriptions, of ``org`` or all (a metric reads it from the
        exporter's thread)."""
        if org is None:
            return len(self._live)
        return sum(1 for s in list(self._live) if s.org == org)

    def live_subscriptions(self) -> list[EphemeralSubscription]:
        """The live ephemeral subscriptions (a copy)."""
        return list(self._live)

    async def subscribe(
        self,
        principal: Principal,
        pattern: str,
        queue: str,
        buffer: int = 0,
        start: StartSpec = FROM_NEW,
    ) -> EphemeralSubscription:
        """An at-most-once subscription. With a replaying ``start`` the stored events up to
        the head come first (as stored frames, no re-encoding), then live ones; an event
        stored while the replay runs may come twice. A replay bigger than
        ``subscriber_max_bytes`` is refused with ``SLOW_CONSUMER`` (it is queued whole)."""
        check_pattern(self.gate, principal, pattern)
        if buffer:
            check_setting("max_in_flight", buffer)
        replay = replays(start)
        after = start_after(start, self._head()) if replay else 0  # validates first
        pos = await log_position(self.events, after, principal.org) if replay else LogPosition(0)
        self.quota.acquire(principal.org)  # released once it leaves _live
        max_bytes = self.live.subscriber_max_bytes(pattern)
        sub = EphemeralSubscription(
            principal.org,
            pattern,
            queue,
            self.config.max_message_bytes,
            max_bytes,
            self.live.subscriber_write_deadline(pattern),
            reader=principal,
        )
        sub.on_slow = self._on_slow
        self.router.add(sub)
        self._live.add(sub)
        if replay:
            # The log up to what is committed once the subscription is routed: a batch
            # whose commit completes from now on reaches it live (batches go to ephemeral
            # subscribers once stored); one committed whose fan-out has not run yet comes
            # both ways, as may one stored while the replay runs.
            committed = self.events.committed_seq(sub.org)
            try:
                await self.history.replay(
                    sub.org,
                    sub.pattern,
                    _Budgeted(sub, max_bytes),
                    pos,
                    committed,
                    self.gate.reader(principal),  # the same per-subject decision as live routing
                )
            except BaseException as exc:
                self.unsubscribe(sub)  # the caller never got it, so never unsubscribes
                if isinstance(exc, ResourceExhausted):
                    self.telemetry.slow_consumers.add(1)
                    self.log.warning("subscription.replay.refused: %s: %s", pattern, exc.message)
                raise
        return sub

    def _leave(self, sub: EphemeralSubscription) -> None:
        self.router.remove(sub)
        if sub in self._live:
            self._live.discard(sub)
            self.quota.release(sub.org)

    def unsubscribe(self, sub: EphemeralSubscription) -> None:
        self._leave(sub)
        sub.outbox.close()

    def close_all(self, error: BrokerError) -> None:
        """Ends every ephemeral stream with ``error`` (on drain); each unsubscribes itself."""
        for sub in list(self._live):
            sub.outbox.close(error)

    def _on_slow(self, sub: EphemeralSubscription) -> None:
        self.telemetry.slow_consumers.add(1)
        self.log.warning(
            "subscription.slow_consumer.cut: slow consumer %s on %s disconnected",
            sub.name,
            sub.pattern,
        )
        self._leave(sub)
