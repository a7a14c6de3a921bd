"""One broker node: wires the publish pipeline, subscriptions, durables, requests and history,
and owns their life cycle.

Gateways and the gRPC server both call :class:`Broker`, so there is one contract.

Example::

    broker = Broker(config, SqliteStore(config.data_dir))
    await broker.start()
    outcome = await broker.publish(principal, "orders.created", [event])
    await broker.stop()
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence

from lockgate.broker import wire
from lockgate.broker.audit import AuditLog
from lockgate.broker.auth import Principal
from lockgate.broker.backbone import Backbone, Interest, InterestWatcher, Notice
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config, ConfigError, redact_url
from lockgate.broker.configstore import ConfigManager
from lockgate.broker.conversations import Conversations
from lockgate.broker.dedup import DedupWindow, MemoryDedupWindow
from lockgate.broker.delivery import BoundSession, DurableConsumer, EphemeralSubscription
from lockgate.broker.durable_relay import DurableRelay, encode
from lockgate.broker.durables import DURABLE_DEFAULTS, DurableOptions, Durables
from lockgate.broker.errors import BrokerError
from lockgate.broker.frameturn import FrameTurn
from lockgate.broker.history import History, HistoryLagSource
from lockgate.broker.ids import IdGenerator
from lockgate.broker.leases import Leases, LocalLeases
from lockgate.broker.limits import Limiter
from lockgate.broker.livesettings import LiveSettings
from lockgate.broker.permissions import Permissions
from lockgate.broker.pipeline import Pipeline, Prepared, PublishOutcome
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.positions import FROM_NEW, StartSpec, start_after
from lockgate.broker.quotas import OrgQuota
from lockgate.broker.registry import BackboneRegistry, RegistryFollower
from lockgate.broker.requests import Requests
from lockgate.broker.roster import EXPIRY_BEATS, LOCKGATE_VERSION, NodeCard, Roster
from lockgate.broker.router import Router
from lockgate.broker.store import CommitFeed, ConsumerRecord, DeadLetterRecord, Store
from lockgate.broker.subscriptions import Ephemerals
from lockgate.broker.telemetry import Telemetry
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.broker.workerid import WorkerIds

__all__ = ["Broker", "DurableOptions", "Prepared", "PublishOutcome", "StartSpec"]

CloudEvent = cloudevent_pb2.CloudEvent
_RETENTION = "retention"
_LEASE_TTL = 15.0
"""Seconds a lease lasts unless renewed; renewed every ``_LEASE_EVERY``."""
_LEASE_EVERY = 5.0
_FOLLOW_EVERY = 1.0
"""Seconds between two reads of the config store and the registry (behind the notices)."""


class Broker:
    """One broker node. ``await start()``, use, ``await stop()``."""

    def __init__(
        self,
        config: Config,
        store: Store,
        policy: PolicyGate | None = None,
        *,
        dedup: DedupWindow | None = None,
        backbone: Backbone | None = None,
        leases: Leases | None = None,
        shared_durables: bool | None = None,
    ) -> None:
        """``shared_durables``: whether other nodes serve the durables of this node's store
        too (cluster mode; default: when the store is not the embedded one)."""
        self.config = config
        self.store = store
        self.policy = policy or PolicyGate()
        self.audit = AuditLog(store, retention=config.audit_retention, window=config.audit_window)
        self.policy.audit = self.audit
        host = socket.gethostname().replace(".", "-")  # one token of a NATS subject
        self.node_id = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
        """This node among the others (lease holder, backbone origin)."""
        self.live = LiveSettings(config)
        """The config store's running version: what it changes reads it live."""
        self.policy.live = self.live
        self.settings = ConfigManager(
            store,
            self.live,
            self.audit,
            lambda v: self.backbone.notify(Notice("config_changed", self.node_id, name=str(v))),
        )
        self.registry = BackboneRegistry(
            store,
            self.audit,
            lambda i: self.backbone.notify(Notice("registry_changed", self.node_id, name=i)),
        )
        """The backbone registry: ``registry.backbone_for(org)``, ``registry.on_change``."""
        self.permissions = Permissions(config.admin_org)
        """Who may do what (the one table); every surface asks it."""
        self.log = logging.getLogger("lockgate.broker")
        self.telemetry = Telemetry()
        self.router = Router(self.policy.may_read)
        self.dedup: DedupWindow = dedup or MemoryDedupWindow(
            config.dedup_window, max_bytes=config.dedup_max_bytes
        )
        self.backbone: Backbone = backbone or LocalBackbone()
        for part in (store, self.backbone):
            if isinstance(part, RegistryFollower):  # routes orgs over their pinned backbone
                self.registry.routes_with(part)
        self.leases: Leases = leases or LocalLeases()
        self.worker = WorkerIds(
            self.leases,
            self.node_id,
            pinned=config.worker_id if config.worker_id >= 0 else None,
            shared=config.limiter != "local",
        )
        """The worker id this node issues ids with, under its lease."""
        self.notice_listeners: list[Callable[[Notice], None]] = []
        self.roster = Roster(expiry=EXPIRY_BEATS * config.heartbeat)
        """The live nodes of the cluster (this one too), from their heartbeats."""
        self.started_ms = int(time.time() * 1000)
        self._last_beat: tuple[float, int] = (time.monotonic(), 0)
        """Called with every notice another node sends."""
        self.history = History(store)
        self.requests = Requests(
            config, self.policy, self.backbone, self.node_id, lambda: self.ids.next()
        )
        subscriptions = OrgQuota(
            "max_subscriptions_per_org",
            config.max_subscriptions_per_org,
            "live subscriptions",
            hint="close subscriptions you no longer read, or ask the operator to raise "
            "max_subscriptions_per_org",
        )
        self.durables = Durables(
            self,
            config,
            store,
            self.policy,
            self.history,
            lambda: self.pipeline.head,
            self.publish_system,
            self._durable_changed,
            subscriptions,
            self.live,
        )
        if isinstance(store, CommitFeed):
            # Every node's commits in commit order, so durables here take them from memory.
            self.durables.feed = store
            store.follow_commits(self.durables.on_log)
        if config.store != "sqlite" if shared_durables is None else shared_durables:
            self.durables.relay = DurableRelay(
                self.node_id, self.backbone, self.leases, self.durables
            )
        self.pipeline = Pipeline(
            config,
            store,
            self.policy,
            self.dedup,
            self.backbone,
            self.telemetry,
            self.durables,
        )
        self.ephemerals = Ephemerals(
            config,
            self.policy,
            self.router,
            self.history,
            self.telemetry,
            lambda: self.pipeline.head,
            store,
            subscriptions,
            self.live,
        )
        self._follow_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.telemetry.observe_depths(self.durables.depths)
        self.telemetry.observe_durable_lag(self.durables.lags)
        self.telemetry.observe_subscriptions(
            lambda: (
                ("ephemeral", self.ephemerals.count()),
                ("durable", len(self.durables.consumers)),
            )
        )
        if isinstance(store, HistoryLagSource):
            self.telemetry.observe_history_lag(store.history_lag)
        self.conversations = Conversations(self, store, config)
        """Conversations: their participants decide who reads their subjects."""
        self.policy.conversations = self.conversations
        self.conversations.limits = self.live.max_group_members
        self._live: set[EphemeralSubscription] = set()
        self._reloads: set[asyncio.Future[None]] = set()
        """Live subscriptions counted in their agent's presence."""

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Opens the store, takes a worker id's lease, and starts serving."""
        await self.store.open()
        await self.audit.start()
        try:
            await self.worker.take()
        except ConfigError:
            await self.audit.stop()
            await self.store.close()
            raise
        try:
            await self.settings.reload()
            await self.registry.reload()
        except BaseException:
            await self.worker.release()
            await self.audit.stop()
            await self.store.close()
            raise
        await self.pipeline.open(self.worker.worker_id, self.worker.check)
        self.worker.on_change = self.pipeline.use_worker
        await self.dedup.open(self.store)
        await self.conversations.load()
        await self.durables.load()
        self.backbone.join(self)
        self.policy.on_swap.append(self._policy_swapped)
        self._tasks = [
            asyncio.create_task(self._ticker(), name="lockgate-ticker"),
            asyncio.create_task(self._lease_loop(), name="lockgate-leases"),
            asyncio.create_task(
                self.conversations.keep_presence(self.leases, self.node_id),
                name="lockgate-presence",
            ),
            asyncio.create_task(self._follow_loop(), name="lockgate-follow"),
            asyncio.create_task(self._heartbeat_loop(), name="lockgate-heartbeat"),
        ]

    async def stop(self) -> None:
        self.draining = True
        if self._follow_task is not None:
            self._tasks.append(self._follow_task)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.backbone.leave(self)
        if self._policy_swapped in self.policy.on_swap:
            self.policy.on_swap.remove(self._policy_swapped)
        self.conversations.close_timers()
        await self.durables.stop()
        await self.dedup.close()
        await self.worker.release()
        try:
            await self.leases.release(_RETENTION, self.node_id)
        except BrokerError as exc:  # it runs out on its own
            self.log.warning("retention.lease.release_failed: %s", exc.message)
        await self.audit.stop()
        await self.store.close()

    async def _ticker(self) -> None:
        running = self.durables.some_running
        while True:
            await running.wait()
            await asyncio.sleep(0.05)
            self.durables.tick(time.monotonic())

    async def _lease_loop(self) -> None:
        """Keeps the worker id's lease (retried every second while it has none), and trims
        the log while holding the retention one."""
        while True:
            if not await self.worker.renew():
                await asyncio.sleep(1.0)
                continue
            # The node's own rules and the config store's, as they are now.
            rules = self.config.retention_rules() + self.live.retention_rules()
            try:
                if rules and await self.leases.acquire(_RETENTION, self.node_id, _LEASE_TTL):
                    removed = await self.store.trim(rules, int(time.time() * 1000))
                    if removed:
                        self.log.info("retention.removed: %d events", removed)
            except BrokerError as exc:
                self.log.error("retention.failed: %s", exc)
            await asyncio.sleep(_LEASE_EVERY)

    async def _heartbeat_loop(self) -> None:
        """Tells the other nodes this one is alive (and how it fares), for the roster."""
        while True:
            try:
                card = self.card()
                self.roster.heard(self.node_id, card)
                self.backbone.notify(Notice("node_alive", self.node_id, name=card.encode()))
            except BrokerError as exc:  # the backbone refused: the next beat tries again
                self.log.warning("roster.heartbeat.failed: %s", exc)
            await asyncio.sleep(self.config.heartbeat)

    def card(self) -> NodeCard:
        """This node's heartbeat card; its rate covers the time since the last card."""
        now, published = time.monotonic(), self.telemetry.totals.of(None)[0]
        then, before = self._last_beat
        self._last_beat = (now, published)
        return NodeCard(
            node_id=self.node_id,
            worker_id=self.worker.worker_id,
            version=LOCKGATE_VERSION,
            listen=self.config.listen,
            started_ms=self.started_ms,
            backbone=redact_url(self.config.backbone, user_is_secret=True),
            events_per_second=round((published - before) / max(now - then, 1e-3), 1),
            subscriptions=self.ephemerals.count(),
            durables=len(self.durables.consumers),
        )

    async def _follow_loop(self) -> None:
        """Reads the config store and the registry every second: the safety net behind a
        lost notice (they are small reads)."""
        while True:
            await asyncio.sleep(_FOLLOW_EVERY)
            await self._follow()

    async def _follow(self) -> None:
        try:
            await self.settings.reload()
            await self.registry.reload()
        except BrokerError as exc:  # the store is down: the running settings stay
            self.log.error("config.follow.failed: %s", exc)

    # -- the backbone's side (Member) ---------------------------------------------------------

    def deliver(
        self,
        org: str,
        subject: str,
        frames: bytes,
        count: int,
        ids: list[int],
        *,
        queues: bool = True,
    ) -> int:
        return self.router.route(org, subject, frames, count, ids, queues=queues)

    def deliver_to(
        self, interest: Interest, subject: str, frames: bytes, count: int, ids: list[int]
    ) -> int:
        return self.router.route_to(interest, subject, frames, count, ids)

    def watch(self, watcher: InterestWatcher | None) -> None:
        self.router.watch(watcher)

    def listens(self, org: str, subject: str) -> bool:
        return self.router.has_targets(org, subject)

    def deliver_reply(self, org: str, inbox: str, event: CloudEvent) -> bool:
        return self.requests.reply(org, inbox, event)

    def on_message(self, body: bytes) -> None:
        if self.durables.relay is not None:
            self.durables.relay.on_message(body)

    async def on_call(self, body: bytes) -> bytes:
        if self.durables.relay is None:
            return encode(
                {
                    "error": {
                        "code": "UNAVAILABLE",
                        "reason": "UNAVAILABLE",
                        "message": "this node shares no durables",
                    }
                }
            )
        return await self.durables.relay.on_call(body)

    def on_notice(self, notice: Notice) -> None:
        if notice.kind == "node_alive":  # the roster's alone: no news for the listeners
            if notice.origin != self.node_id:
                self.roster.heard(notice.origin, NodeCard.decode(notice.name))
            return
        if notice.origin != self.node_id:
            self.roster.heard(notice.origin)
        # One node has nothing to reload; a cluster node reloads the durable or the active
        # policy version from the shared store here. The config store and the registry are
        # read again at once (one read in flight at a time; the poll covers the rest).
        if notice.kind in ("config_changed", "registry_changed") and (
            self._follow_task is None or self._follow_task.done()
        ):
            self._follow_task = asyncio.create_task(self._follow(), name="lockgate-follow-now")
        if notice.kind == "presence_online":
            self.conversations.remote_online(notice.org, notice.name)
        if notice.kind == "conversation_changed":
            task = asyncio.ensure_future(self._reload_conversation(notice.org, notice.name))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)
        for listener in list(self.notice_listeners):
            listener(notice)

    async def _reload_conversation(self, org: str, conversation_id: str) -> None:
        try:
            await self.conversations.reload(org, conversation_id)
        except BrokerError as exc:
            # Its next change (or this node's restart) loads it; meanwhile reads of it here
            # follow the participants this node knew.
            self.log.error("conversation.reload_failed: %s: %s", conversation_id, exc.message)

    def _durable_changed(self, org: str, name: str) -> None:
        self.backbone.notify(Notice("durable_changed", self.node_id, org, name))

    def _policy_swapped(self, version: str) -> None:
        self.router.forget_matches()  # they were filtered by the old set's read decisions
        self.backbone.notify(Notice("policy_swapped", self.node_id, name=version))

    # -- state the parts share ----------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.pipeline.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.pipeline.draining = value

    @property
    def head(self) -> int:
        """The highest id assigned."""
        return self.pipeline.head

    @property
    def ids(self) -> IdGenerator:
        return self.pipeline.ids

    @property
    def consumers(self) -> dict[tuple[str, str], DurableConsumer]:
        return self.durables.consumers

    @property
    def on_durable_created(self) -> list[Callable[[DurableConsumer], None]]:
        return self.durables.on_created

    def start_after(self, start: StartSpec) -> int:
        """The id after which a subscription starting at ``start`` begins."""
        return start_after(start, self.head)

    # -- publish ----------------------------------------------------------------------------

    async def publish(
        self, principal: Principal, subject: str, events: Sequence[CloudEvent]
    ) -> PublishOutcome:
        """Validates, stores and routes one batch; per-event rejections are in the outcome."""
        return await self.pipeline.publish(principal, subject, events)

    async def prepare(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[CloudEvent],
        received: int = 0,
        *,
        turn: FrameTurn | None = None,
        fresh: bool = False,
    ) -> Prepared:
        """See :meth:`Pipeline.prepare`."""
        return await self.pipeline.prepare(
            principal, subject, events, received, turn=turn, fresh=fresh
        )

    async def commit(self, prepared: Prepared) -> PublishOutcome:
        """See :meth:`Pipeline.commit`."""
        return await self.pipeline.commit(prepared)

    async def publish_system(self, org: str, subject: str, events: Sequence[CloudEvent]) -> None:
        """Stores events on a broker-owned ``$`` subject (dead letters)."""
        await self.pipeline.publish_system(org, subject, events)

    async def publish_dead_letters(
        self, rec: ConsumerRecord, records: Sequence[DeadLetterRecord]
    ) -> None:
        await self.durables.publish_dead_letters(rec, records)

    # -- subscribe --------------------------------------------------------------------------

    async def subscribe_ephemeral(
        self,
        principal: Principal,
        pattern: str,
        queue: str,
        buffer: int = 0,
        start: StartSpec = FROM_NEW,
    ) -> EphemeralSubscription:
        """See :meth:`Ephemerals.subscribe`; live on every node once it returns."""
        sub = await self.ephemerals.subscribe(principal, pattern, queue, buffer, start)
        try:
            await self.backbone.settle(principal.org)
        except BaseException:
            self.ephemerals.unsubscribe(sub)  # the caller never got it, so never unsubscribes
            raise
        self._live.add(sub)
        self.conversations.connected(principal)  # a live subscription: presence
        return sub

    def unsubscribe(self, sub: EphemeralSubscription) -> None:
        self.ephemerals.unsubscribe(sub)
        if sub in self._live and sub.reader is not None:
            self._live.discard(sub)
            self.conversations.disconnected(sub.reader)

    def close_streams(self, error: BrokerError) -> None:
        """Ends every subscriber stream of this node with ``error`` (on drain)."""
        self.ephemerals.close_all(error)
        for c in self.durables.consumers.values():
            for s in c.sessions:
                s.outbox.close(error)
        if self.durables.relay is not None:
            self.durables.relay.close_all(error)

    # -- conversations (their Host) ----------------------------------------------------------

    @property
    def limiter(self) -> Limiter:
        return self.policy.limiter

    async def publish_owned(
        self, principal: Principal, subject: str, event: CloudEvent
    ) -> tuple[int, bool, BrokerError | None]:
        prepared = await self.pipeline.prepare(principal, subject, [event], owned=True)
        out = await self.pipeline.commit(prepared)
        if out.errors:
            return 0, False, out.errors[0][1]
        return out.ids[0], bool(out.duplicates), None

    def notify_live(self, org: str, subject: str, event: CloudEvent) -> None:
        ids = self.ids.next_block(1)
        raw = event.SerializeToString()
        (frame,) = wire.delivery_frames(ids, wire.subject_field(subject), [raw])
        self.backbone.fan_out(org, subject, frame, 1, ids)

    def reads_changed(self) -> None:
        self.router.forget_matches()

    def presence_seen(self, org: str, agent: str) -> None:
        self.backbone.notify(Notice("presence_online", self.node_id, org, agent))

    def conversation_changed(self, org: str, conversation_id: str) -> None:
        self.backbone.notify(Notice("conversation_changed", self.node_id, org, conversation_id))

    async def read_stored(
        self, org: str, subject: str, after_id: int, start_ms: int, limit: int
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        return await self.history.query(
            org, subject, after_id=after_id, start_ms=start_ms, limit=limit
        )

    # -- durables ---------------------------------------------------------------------------

    async def create_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions = DURABLE_DEFAULTS,
    ) -> DurableConsumer:
        """The durable ``name``, created with ``options`` when it does not exist; an
        existing one with other settings is refused (``DURABLE_MISMATCH``)."""
        return await self.durables.create(principal, name, pattern, options)

    async def subscribe_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions = DURABLE_DEFAULTS,
    ) -> BoundSession:
        """Binds a stream to the durable ``name`` (created on first use); the stream counts
        in its agent's presence until it is closed."""
        session = await self.durables.subscribe(principal, name, pattern, options)
        self.conversations.connected(principal)
        return session

    def unbind_durable(self, principal: Principal, session: BoundSession) -> None:
        """Closes a stream's session from :meth:`subscribe_durable` (and its presence)."""
        session.close()
        self.conversations.disconnected(principal)

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
        """See :meth:`Durables.fetch`."""
        return await self.durables.fetch(
            principal, name, max_events, wait, pattern=pattern, start=start
        )

    async def terminate(self, principal: Principal, name: str, ids: list[int]) -> None:
        await self.durables.terminate(principal, name, ids)

    async def acknowledge(
        self,
        principal: Principal,
        name: str,
        ack_ids: list[int],
        nack_ids: list[int],
        nack_delay: float = 0.0,
    ) -> None:
        """See :meth:`Durables.acknowledge` (the acks are stored when this returns)."""
        await self.durables.acknowledge(principal, name, ack_ids, nack_ids, nack_delay)

    def durable(self, org: str, name: str) -> DurableConsumer:
        return self.durables.get(org, name)

    async def durable_view(self, org: str, name: str) -> DurableConsumer:
        """See :meth:`Durables.view` (what describe and list show, on any node)."""
        return await self.durables.view(org, name)

    async def durable_names(self, org: str) -> list[str]:
        return await self.durables.names(org)

    async def delete_durable(self, org: str, name: str) -> None:
        await self.durables.delete(org, name)

    async def redrive(self, org: str, name: str, ids: Sequence[int] | None) -> int:
        return await self.durables.redrive(org, name, ids)

    # -- request / reply, history -------------------------------------------------------------

    @property
    def store_kind(self) -> str:
        """``sqlite`` (embedded) or ``cluster``; never the store's URL (it may carry a
        password)."""
        return "sqlite" if self.config.store == "sqlite" else "cluster"

    def history_lag(self) -> int | None:
        """Log batches not yet in the PostgreSQL history (None: no message logger here, or
        it has not measured yet)."""
        return self.store.history_lag() if isinstance(self.store, HistoryLagSource) else None

    async def request(
        self, principal: Principal, subject: str, event: CloudEvent, timeout: float
    ) -> CloudEvent:
        return await self.requests.request(principal, subject, event, timeout)

    async def fetch_frame(self, org: str, event_id: int) -> bytes | None:
        return await self.history.fetch_frame(org, event_id)

    def may_read(self, principal: Principal, subject: str) -> bool:
        """See :meth:`PolicyGate.may_read` (for durable consumers)."""
        return self.policy.may_read(principal, subject)

    async def get_event(self, principal: Principal, event_id: int) -> broker_pb2.StoredEvent:
        """One event of the principal's org; NOT_FOUND also when its subject is one the
        principal may not subscribe to (the answer does not reveal that it exists)."""
        return await self.history.get_event(principal.org, event_id, self.policy.reader(principal))

    async def query(
        self,
        principal: Principal,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
        cloudevent_id: str = "",
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """See :meth:`History.query`: only events whose subject the principal may
        subscribe to (a read decision per stored subject, as for every read)."""
        return await self.history.query(
            principal.org,
            pattern,
            after_id=after_id,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            readable=self.policy.reader(principal),
            cloudevent_id=cloudevent_id,
        )
