"""The durable registry of one node: create, look up, bind, poll, ack, delete, redrive.

Each durable subscription is a :class:`~broker.delivery.DurableConsumer`; this module keeps
them by ``(org, name)`` and hands them every committed batch; each consumer writes its own
state as it changes (see :mod:`broker.delivery.durable`).

Example::

    consumer = await durables.create(principal, "billing", "orders.>")
    await durables.acknowledge(principal, "billing", [42], [])
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.bounds import check_setting
from lockgate.broker.config import Config
from lockgate.broker.deadletters import ORIGINAL_SUBJECT, is_dead_letter
from lockgate.broker.delivery import BoundSession, DurableConsumer, DurableHost
from lockgate.broker.delivery.recent import RecentCommits
from lockgate.broker.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from lockgate.broker.history import History
from lockgate.broker.livesettings import LiveSettings
from lockgate.broker.permissions import Permissions
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.positions import FROM_NEW, StartSpec, log_position, start_after
from lockgate.broker.publisher import encode_publisher
from lockgate.broker.quotas import OrgQuota
from lockgate.broker.redaction import kept_url, shown_url
from lockgate.broker.store import Batch, CommitFeed, ConsumerRecord, DeadLetterRecord, Store
from lockgate.broker.subscriptions import check_pattern
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

if TYPE_CHECKING:
    from lockgate.broker.durable_relay import DurableRelay

__all__ = [
    "DURABLE_DEFAULTS",
    "DurableOptions",
    "Durables",
    "check_durable_name",
    "new_webhook_secret",
    "webhook_secrets_in_use",
]

CloudEvent = cloudevent_pb2.CloudEvent
SystemPublish = Callable[[str, str, Sequence[CloudEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DurableOptions:
    """The settings of a durable subscription; 0 and "" take the broker's defaults.

    Example::

        await broker.create_durable(p, "billing", "orders.>", DurableOptions(max_deliveries=3))
    """

    queue: str = ""
    start: StartSpec = FROM_NEW
    """Where a new durable starts; an existing one goes on where it stopped."""
    max_in_flight: int = 0
    ack_wait: float = 0.0
    """Seconds before an unacknowledged delivery is redelivered."""
    max_deliveries: int = 0
    endpoint_url: str = ""
    """A webhook URL: the webhook dispatcher POSTs the deliveries there."""


DURABLE_DEFAULTS = DurableOptions()

# The settings a durable keeps, as (ConsumerRecord field, DurableOptions field, name shown).
_SETTINGS = (
    ("pattern", "", "pattern"),
    ("queue", "queue", "queue"),
    ("ack_wait_ms", "ack_wait", "ack_wait"),
    ("max_deliveries", "max_deliveries", "max_deliveries"),
    ("max_in_flight", "max_in_flight", "max_in_flight"),
    ("endpoint_url", "endpoint_url", "endpoint_url"),
)


def _difference(have: ConsumerRecord, want: ConsumerRecord) -> list[tuple[str, object, object]]:
    """The settings in which two records differ: (name, existing value, wanted value)."""
    out: list[tuple[str, object, object]] = []
    for field_name, _, shown in _SETTINGS:
        a, b = getattr(have, field_name), getattr(want, field_name)
        if a != b:
            if field_name == "ack_wait_ms":
                a, b = f"{a / 1000:g}s", f"{b / 1000:g}s"
            elif field_name == "endpoint_url":  # the refusal must not show its credentials
                a, b = shown_url(str(a)), shown_url(str(b))
            out.append((shown, a, b))
    return out


def _given(options: DurableOptions, setting: str) -> bool:
    for _, option, shown in _SETTINGS:
        if shown == setting and option:
            return bool(getattr(options, option))
    return False


def new_webhook_secret() -> str:
    """A webhook durable's signing secret: ``whsec_`` and the base64 of 24 random bytes (the
    Standard Webhooks form; ``clients.verify_webhook`` takes it as it is)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def webhook_secrets_in_use(rec: ConsumerRecord, now_ms: int) -> list[str]:
    """The secrets a delivery of ``rec`` is signed with now: the current one, and rotated-out
    ones until their grace ends."""
    return [s for s, until in rec.webhook_secrets if until == 0 or until > now_ms]


def check_durable_name(name: str) -> None:
    if not name or len(name) > 128 or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise InvalidArgument(
            f"durable name {name!r} is invalid",
            reason="INVALID_DURABLE",
            hint="use 1-128 letters, digits, '-' and '_'",
        )


class Durables:
    """The node's durable consumers by ``(org, name)``."""

    def __init__(
        self,
        host: DurableHost,
        config: Config,
        store: Store,
        gate: PolicyGate,
        history: History,
        head: Callable[[], int],
        publish_system: SystemPublish,
        changed: Callable[[str, str], None],
        subscriptions: OrgQuota,
        live: LiveSettings | None = None,
    ) -> None:
        self.host = host
        self.live = live or LiveSettings(config)
        """The config store's running settings: new durables' defaults, backoff."""
        self.config = config
        self.store = store
        self.gate = gate
        self.history = history
        self._head = head
        self._publish_system = publish_system
        self._changed = changed
        """Called with ``(org, name)`` when a durable is created, deleted or redriven."""
        self.permissions = Permissions(config.admin_org)
        self.consumers: dict[tuple[str, str], DurableConsumer] = {}
        self.some_running = asyncio.Event()
        """Set while this node runs a consumer: the node's ticker sleeps without one (in a
        cluster most nodes run none, and 20 idle ticks a second were a fifth of an idle
        node's CPU)."""
        self.quota = OrgQuota(
            "max_durables_per_org",
            config.max_durables_per_org,
            "durable subscriptions",
            hint="delete durables no longer used (`lockgate durables delete`), or ask the "
            "operator to raise max_durables_per_org",
        )
        self.subscriptions = subscriptions
        """Live subscriptions per org (a bound stream is one), shared with the ephemerals."""
        self.recent = RecentCommits()
        """The last committed batches, for consumers a little behind the head."""
        self.on_created: list[Callable[[DurableConsumer], None]] = []
        self.log = logging.getLogger("lockgate.broker")
        self.feed: CommitFeed | None = None
        """In a cluster: the store's feed of every node's commits (``on_log``), which
        brings the commits it feeds instead of this node's publish path (``on_commit``)."""
        self.relay: DurableRelay | None = None
        """Set in a cluster (durables shared by the nodes): this node then runs only the
        durables whose lease it holds, and relays to the owners of the others."""

    # -- life cycle -------------------------------------------------------------------------

    async def load(self) -> None:
        """Starts the consumers the store remembers (in a cluster: none; each is taken on
        by the node that needs it, see ``broker.durable_relay``)."""
        if self.relay is not None:
            self.relay.start()
            return
        for rec in await self.store.load_consumers():
            self.adopt(rec)

    def adopt(self, rec: ConsumerRecord, *, announce: bool = False) -> DurableConsumer:
        """Runs the stored durable ``rec`` in this node; ``announce``: tells ``on_created``
        (a cluster node taking it on: this node's webhook dispatcher then serves it)."""
        c = DurableConsumer(self.host, rec, self.config.max_in_flight_bytes, self.recent)
        self._follow(c)
        self.consumers[(rec.org, rec.name)] = c
        self.quota.add(rec.org)  # kept, even beyond a quota lowered since
        c.start()
        if announce:
            for hook in self.on_created:
                hook(c)
        return c

    async def disown(self, org: str, name: str) -> None:
        """Stops running durable ``name`` here (another node took it on)."""
        c = self.consumers.pop((org, name), None)
        if c is not None:
            self.quota.release(org)
            await c.stop()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.stop()
        for c in self.consumers.values():
            await c.stop()  # stores its last position and pending deliveries
        if self.relay is not None:
            await self.relay.release_all()  # the next owner loads what was stored

    def tick(self, now: float) -> None:
        """Expires overdue deliveries and writes each consumer's recent deliveries and
        position (called every few tens of milliseconds while :attr:`some_running`)."""
        if not self.consumers:
            self.some_running.clear()
        for c in self.consumers.values():
            if c.pending:
                c.expire(now)
            c.poke()
            c.flush()

    def depths(self) -> list[tuple[str, int]]:
        # The metric readers call this from their own threads: list() copies the dict in one
        # step under the GIL, so a durable added meanwhile cannot break the iteration.
        return [
            (f"durable:{org}/{name}", len(c.pending) + len(c.ready))
            for (org, name), c in list(self.consumers.items())
        ]

    def lags(self) -> list[tuple[str, int]]:
        """Per durable, the log batches after its read position up to the head (batches of
        subjects it does not match count too: it has still to scan past them)."""
        return [
            (f"durable:{org}/{name}", self.lag_of(c))
            for (org, name), c in list(self.consumers.items())
        ]

    def lag_of(self, c: DurableConsumer) -> int:
        """The log batches after ``c``'s read position up to the newest committed one in
        its org's log. Positions count batches (the log's sequence, with a routed log's
        slot), so the head is the store's committed sequence for that org, never the newest
        event id (the two differ by the ids' magnitude: the gauge showed 3.8e17)."""
        return max(0, self.store.committed_seq(c.rec.org) + 1 - c.position.seq)

    # -- the publish path's hand-over (CommitListener) ------------------------------------------

    def wants_frames(self) -> bool:
        return bool(self.consumers)

    def on_commit(self, batch: Batch, seq: int, frames: list[tuple[int, bytes]]) -> None:
        feed = self.feed
        if feed is not None:
            if feed.feeds(seq):
                return  # the feed brings it, in order with the other nodes' commits
            # A log the feed does not carry (an org pinned to another backbone): handed
            # to the consumers at its head, kept out of the window of the fed log.
            for c in list(self.consumers.values()):
                c.on_commit(batch, seq, frames)
            return
        self._commit(batch, seq, frames)

    def _commit(self, batch: Batch, seq: int, frames: list[tuple[int, bytes]]) -> None:
        self.recent.add(batch, seq, frames)
        for c in list(self.consumers.values()):
            c.on_commit(batch, seq, frames)

    def on_log(self, batch: Batch, seq: int) -> None:
        """A commit of any node, in commit order, from a shared log's feed
        (:class:`~broker.store.CommitFeed`). Its events are split out only
        when a consumer here takes them now (a reader behind splits what it reads)."""
        consumers = list(self.consumers.values())
        if not consumers:
            return  # the window restarts at the next commit once a consumer runs here
        org, subject = batch.org, batch.subject
        wanted = any(c.rec.org == org and c.wants(subject) for c in consumers)
        self._commit(batch, seq, wire.split_frames(batch.body) if wanted else [])

    # -- the registry -----------------------------------------------------------------------

    def get(self, org: str, name: str) -> DurableConsumer:
        c = self.consumers.get((org, name))
        if c is None:
            raise NotFound(
                f"durable subscription {name[:80]!r} does not exist",
                reason="UNKNOWN_DURABLE",
                hint="list them with `lockgate durables list`",
            )
        return c

    async def create(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions = DURABLE_DEFAULTS,
        *,
        exact: bool = True,
    ) -> DurableConsumer:
        """The durable ``name``, created with ``options`` when it does not exist (see
        :meth:`_create`); in a cluster, on the node that runs it. A durable another node
        runs is answered with a copy of its settings, not a running consumer."""
        relay = self.relay
        if relay is None:
            return await self._create(principal, name, pattern, options, exact=exact)
        route = await relay.route(principal.org, name)
        if not isinstance(route, str):
            return await self.bind_here(principal, name, pattern, options, route, exact=exact)
        from lockgate.broker.durable_relay import _options_out, record_view

        args = {"pattern": pattern, "options": _options_out(options)}
        answer = await relay.forward(principal, name, "create", args)
        rec, secret = record_view(principal.org, name, answer)
        view = DurableConsumer(self.host, rec, self.config.max_in_flight_bytes, self.recent)
        view.new_secret = secret
        return view

    async def bind_here(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions,
        route: DurableConsumer | None,
        *,
        exact: bool = False,
    ) -> DurableConsumer:
        """(In a cluster.) The durable this node runs (``route``), checked against
        ``pattern`` and ``options``; ``route`` None: created here (this node holds its lease;
        given up again when the create fails)."""
        try:
            return await self._create(principal, name, pattern, options, exact=exact)
        except BaseException:
            if route is None and self.relay is not None:
                await self.relay.let_go(principal.org, name)
            raise

    async def _create(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions = DURABLE_DEFAULTS,
        *,
        exact: bool = True,
    ) -> DurableConsumer:
        """The durable ``name``, created with ``options`` when it does not exist.

        An existing durable is returned when its settings agree; one that differs fails
        with ``DURABLE_MISMATCH`` naming the setting. ``exact`` (an explicit create)
        compares every setting, unset ones as the broker's defaults; otherwise (binding a
        stream or a poll) only the pattern and the settings given are compared.

        The permission is the same on every surface (Subscribe, Fetch, CreateDurable, HTTP,
        WebSocket): whoever may subscribe to ``pattern`` may create a durable on it; a webhook
        durable (``endpoint_url``) makes the broker call out, so it needs the org-admin role
        (``durable.webhook`` in ``broker.permissions``).
        """
        if options.endpoint_url:
            self.permissions.authorize(principal, "durable.webhook", principal.org)
        check_pattern(self.gate, principal, pattern)
        check_durable_name(name)
        key = (principal.org, name)
        consumer = self.consumers.get(key)
        if consumer is not None and options.endpoint_url:
            # The endpoint_url as a read shows it (credentials hidden) means the stored one.
            kept = kept_url(options.endpoint_url, consumer.rec.endpoint_url)
            options = dataclasses.replace(options, endpoint_url=kept)
        wanted = self._record(principal.org, name, pattern, options)  # checks the settings
        wanted.owner = encode_publisher(principal.agent, principal.roles)
        if consumer is not None:
            differs = _difference(consumer.rec, wanted)
            for setting, have, want in differs:
                if exact or setting == "pattern" or _given(options, setting):
                    raise FailedPrecondition(
                        f"durable {name!r} exists with {setting} {have!r}, not {want!r}",
                        reason="DURABLE_MISMATCH",
                        hint="use the durable's settings, another name, or delete it first",
                        metadata={"setting": setting},
                    )
            return consumer
        self.quota.check(principal.org)
        if options.endpoint_url:
            await self.check_endpoint(options.endpoint_url)
        rec = wanted
        rec.position = await log_position(
            self.store, start_after(options.start, self._head()), rec.org
        )
        # Checked again after the awaits: creates racing each other must not pass together.
        self.quota.check(principal.org)
        if key in self.consumers:
            return await self._create(principal, name, pattern, options, exact=exact)
        secret = ""
        if rec.endpoint_url:
            secret = new_webhook_secret()
            rec.webhook_secrets = [(secret, 0)]
        await self.store.create_consumer(rec)
        consumer = DurableConsumer(self.host, rec, self.config.max_in_flight_bytes, self.recent)
        self._follow(consumer)
        consumer.new_secret = secret  # shown once, by the call that created it
        self.consumers[key] = consumer
        self.quota.add(principal.org)
        consumer.start()
        for hook in self.on_created:
            hook(consumer)
        self._changed(principal.org, name)
        return consumer

    def _follow(self, consumer: DurableConsumer) -> None:
        """Its redelivery backoff follows the config store, live; the ticker runs."""
        pattern, live = consumer.rec.pattern, self.live
        consumer.backoff = lambda: live.backoff(pattern)
        self.some_running.set()

    def _record(self, org: str, name: str, pattern: str, o: DurableOptions) -> ConsumerRecord:
        """The record ``o`` asks for, unset settings as the broker's defaults (the config
        store's for ``pattern``, else the node's); a setting outside
        :data:`~broker.bounds.BOUNDS` is refused with INVALID_SETTING."""
        cfg = self.config
        ack_wait = o.ack_wait or self.live.ack_wait(pattern)
        max_deliveries = o.max_deliveries or self.live.max_deliveries(pattern)
        max_in_flight = o.max_in_flight or cfg.max_in_flight
        check_setting("ack_wait", ack_wait)
        check_setting("max_deliveries", max_deliveries)
        check_setting("max_in_flight", max_in_flight)
        return ConsumerRecord(
            org=org,
            name=name,
            pattern=pattern,
            queue=o.queue,
            ack_wait_ms=int(ack_wait * 1000),
            max_deliveries=max_deliveries,
            max_in_flight=max_in_flight,
            endpoint_url=o.endpoint_url,
        )

    def _webhook(self, org: str, name: str) -> DurableConsumer:
        c = self.get(org, name)
        if not c.rec.endpoint_url:
            raise FailedPrecondition(
                f"durable {name!r} has no endpoint_url, so no webhook secret",
                reason="FAILED_PRECONDITION",
                hint="only webhook durables sign their deliveries",
            )
        return c

    def webhook_secrets(self, org: str, name: str) -> list[str]:
        """The secrets webhook durable ``name`` signs with now, newest first."""
        c = self._webhook(org, name)
        return webhook_secrets_in_use(c.rec, int(time.time() * 1000))

    async def rotate_webhook_secret(self, org: str, name: str, grace: float) -> str:
        """A new signing secret for webhook durable ``name``, returned once; the current one
        goes on signing beside it for ``grace`` seconds (receivers switch meanwhile)."""
        c = self._webhook(org, name)
        check_setting("webhook_secret_grace", grace)
        now_ms = int(time.time() * 1000)
        until = now_ms + int(grace * 1000)
        kept = [(s, u) for s, u in c.rec.webhook_secrets if u == 0 or u > now_ms]
        secret = new_webhook_secret()
        c.rec.webhook_secrets = [(secret, 0), *[(s, u or until) for s, u in kept][:4]]
        await self.store.save_consumer_config(c.rec)
        self._changed(org, name)
        return secret

    async def check_endpoint(self, url: str) -> None:
        """Webhook URLs: http(s) only, and no private or loopback address unless allowed.
        The name is resolved in a thread: a slow DNS server must not stall the event loop."""
        from lockgate.broker.webhooks import check_endpoint_url

        allow = self.config.webhook_allow_private
        await asyncio.to_thread(check_endpoint_url, url, allow_private=allow)

    async def subscribe(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions = DURABLE_DEFAULTS,
    ) -> BoundSession:
        """Binds a stream to the durable ``name`` (created on first use)."""
        org = principal.org
        if self.relay is not None:
            self.subscriptions.acquire(org)
            try:
                stream = await self.relay.subscribe(
                    principal, name, pattern, options, self.config.max_message_bytes
                )
            except BaseException:
                self.subscriptions.release(org)
                raise
            stream.on_close.append(lambda: self.subscriptions.release(org))
            return stream
        consumer = await self.create(principal, name, pattern, options, exact=False)
        self.subscriptions.acquire(org)
        session = consumer.attach(self.config.max_message_bytes, principal=principal)
        session.on_detach = lambda: self.subscriptions.release(org)
        return session

    async def view(self, org: str, name: str) -> DurableConsumer:
        """The durable as this node can show it: its consumer here or, in a cluster when
        another node (or none) runs it, a copy built from the store (its pending as last
        written, no sessions). UNKNOWN_DURABLE when there is none."""
        c = self.consumers.get((org, name))
        if c is None and self.relay is not None:
            for rec in await self.store.load_consumers():
                if (rec.org, rec.name) == (org, name):
                    return DurableConsumer(self.host, rec, self.config.max_in_flight_bytes)
        return self.get(org, name)

    async def names(self, org: str) -> list[str]:
        """The names of ``org``'s durables (in a cluster: all of them, from the store)."""
        if self.relay is None:
            return sorted(n for (o, n) in self.consumers if o == org)
        return sorted(r.name for r in await self.store.load_consumers() if r.org == org)

    async def _here(self, org: str, name: str) -> DurableConsumer | str:
        """The consumer of ``name`` in this node, or (in a cluster) the node running it;
        UNKNOWN_DURABLE when there is none."""
        relay = self.relay
        if relay is None:
            return self.get(org, name)
        route = await relay.route(org, name)
        if route is None:
            await relay.let_go(org, name)
            return self.get(org, name)  # raises
        return route

    async def fetch(
        self,
        principal: Principal,
        name: str,
        max_events: int,
        wait: float,
        *,
        pattern: str = "",
        start: StartSpec = FROM_NEW,
    ) -> bytes:
        """Polling delivery: up to ``max_events`` deliveries as encoded frames ("" if none
        arrived within ``wait``). They stay pending until acked, as with a stream."""
        relay = self.relay
        where: DurableConsumer | str | None
        if relay is not None:
            where = await relay.route(principal.org, name)
            if isinstance(where, str):
                args = {
                    "max": max_events,
                    "wait": wait,
                    "pattern": pattern,
                    "start": [start.policy, start.since_ms, start.after_id],
                }
                return await relay.forward(principal, name, "fetch", args, timeout=wait + 10)
        if pattern:
            options = DurableOptions(start=start)
            if relay is not None and not isinstance(where, str):
                consumer = await self.bind_here(principal, name, pattern, options, where)
            else:
                consumer = await self.create(principal, name, pattern, options, exact=False)
        else:
            found = await self._here(principal.org, name)
            if isinstance(found, str):  # moved meanwhile
                raise Unavailable(f"durable {name!r} has moved to another node", hint="retry")
            consumer = found
            check_pattern(self.gate, principal, consumer.rec.pattern)  # as binding with it
        max_events = max(1, min(max_events or 100, 10_000))
        session = consumer.attach(
            self.config.max_message_bytes, limit=max_events, kind="poll", principal=principal
        )
        try:
            await consumer.pump()
            try:
                body = await asyncio.wait_for(session.outbox.take(), wait) if wait > 0 else None
            except TimeoutError:
                body = None
            if body is None and session.outbox.buffered:
                body = await session.outbox.take()
            return body or b""
        finally:
            # What was fetched stays pending (acked later over HTTP or redelivered after
            # the ack wait); only what was handed to this session but not taken is freed.
            consumer.detach(session, keep_pending=True)

    async def terminate(self, principal: Principal, name: str, ids: list[int]) -> None:
        """Dead-letters pending deliveries of a durable now (all or nothing)."""
        found = await self._here(principal.org, name)
        if isinstance(found, str) and self.relay is not None:
            await self.relay.forward(principal, name, "ack", {"term": ids, "ack": [], "nack": []})
            return
        await self.get(principal.org, name).terminate(ids)

    async def acknowledge(
        self,
        principal: Principal,
        name: str,
        ack_ids: list[int],
        nack_ids: list[int],
        nack_delay: float = 0.0,
    ) -> None:
        """Acks and nacks by durable name; all-or-nothing (see ``DurableConsumer.ack``).
        The acks are stored when this returns."""
        found = await self._here(principal.org, name)
        if isinstance(found, str) and self.relay is not None:
            args = {"ack": ack_ids, "nack": nack_ids, "delay": nack_delay}
            await self.relay.forward(principal, name, "ack", args)
            return
        consumer = self.get(principal.org, name)
        both = set(ack_ids) & set(nack_ids)
        if both:
            raise InvalidArgument(f"id {min(both)} is both acked and nacked", reason="INVALID_ACK")
        consumer.check_pending(ack_ids + nack_ids)
        if nack_ids:
            consumer.nack(nack_ids, nack_delay)
        if ack_ids:
            await consumer.ack(ack_ids)

    async def delete(self, org: str, name: str) -> None:
        found = await self._here(org, name)
        if isinstance(found, str) and self.relay is not None:
            await self.relay.forward(Principal(org, "", frozenset()), name, "delete", {})
            return
        c = self.get(org, name)
        c.deleted = True
        del self.consumers[(org, name)]
        self.quota.release(org)
        await c.stop()
        await self.store.delete_consumer(org, name)
        if self.relay is not None:
            await self.relay.let_go(org, name)
        self._changed(org, name)

    async def redrive(self, org: str, name: str, ids: Sequence[int] | None) -> int:
        found = await self._here(org, name)
        if isinstance(found, str) and self.relay is not None:
            args = {"ids": None if ids is None else list(ids)}
            answer = await self.relay.forward(
                Principal(org, "", frozenset()), name, "redrive", args
            )
            return int(answer)
        c = self.get(org, name)
        removed = await self.store.remove_dead_letters(org, name, ids or None)
        await c.redrive(removed)
        self._changed(org, name)
        return len(removed)

    async def publish_dead_letters(
        self, rec: ConsumerRecord, records: Sequence[DeadLetterRecord]
    ) -> None:
        """Stores dead-lettered events on ``$dlq.<durable>``, with where they came from."""
        events = []
        for r in records:
            frame = await self.history.fetch_frame(rec.org, r.id)
            if frame is None:
                continue
            d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
            ev = d.event
            ev.attributes["lockgatedlqdurable"].ce_string = rec.name
            ev.attributes["lockgatedlqattempts"].ce_integer = r.attempts
            ev.attributes["lockgateoriginalid"].ce_string = str(r.id)
            # Readers need this subject's read permission (broker.deadletters). A dead letter
            # dead-lettered again keeps the first one (the broker wrote it); any other event's
            # attribute is the publisher's word, so it is overwritten.
            if not is_dead_letter(d.subject) or ORIGINAL_SUBJECT not in ev.attributes:
                ev.attributes[ORIGINAL_SUBJECT].ce_string = d.subject
            events.append(ev)
        if events:
            await self._publish_system(rec.org, f"$dlq.{rec.name}", events)
