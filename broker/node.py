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
import time
from collections.abc import Callable, Sequence

from broker.auth import Principal
from broker.config import Config
from broker.dedup import DedupWindow, MemoryDedupWindow
from broker.delivery import DurableConsumer, DurableSession, EphemeralSubscription
from broker.durables import Durables
from broker.errors import BrokerError
from broker.history import History
from broker.ids import IdGenerator
from broker.pipeline import Pipeline, Prepared, PublishOutcome
from broker.policyhook import PolicyGate
from broker.positions import FROM_NEW, StartSpec, start_after
from broker.requests import Requests
from broker.router import Router
from broker.store import ConsumerRecord, DeadLetterRecord, Store
from broker.subscriptions import Ephemerals
from broker.telemetry import Telemetry
from broker.v1 import broker_pb2, cloudevent_pb2

__all__ = ["Broker", "Prepared", "PublishOutcome", "StartSpec"]

CloudEvent = cloudevent_pb2.CloudEvent


class Broker:
    """One broker node. ``await start()``, use, ``await stop()``."""

    def __init__(
        self,
        config: Config,
        store: Store,
        policy: PolicyGate | None = None,
        *,
        dedup: DedupWindow | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.policy = policy or PolicyGate()
        self.log = logging.getLogger("lockgate.broker")
        self.telemetry = Telemetry()
        self.router = Router()
        self.dedup: DedupWindow = dedup or MemoryDedupWindow(config.dedup_window)
        self.history = History(store)
        self.requests = Requests(config, self.policy, self.router, lambda: self.ids.next())
        self.durables = Durables(
            self,
            config,
            store,
            self.policy,
            self.history,
            lambda: self.pipeline.head,
            self.publish_system,
        )
        self.pipeline = Pipeline(
            config,
            store,
            self.policy,
            self.dedup,
            self.router,
            self.telemetry,
            self.durables,
            self.requests,
        )
        self.ephemerals = Ephemerals(
            config,
            self.policy,
            self.router,
            self.history,
            self.telemetry,
            lambda: self.pipeline.head,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.telemetry.observe_depths(self.durables.depths)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await self.pipeline.open()
        await self.dedup.open(self.store)
        await self.durables.load()
        self._tasks = [
            asyncio.create_task(self._ticker(), name="lockgate-ticker"),
            asyncio.create_task(self._retention_loop(), name="lockgate-retention"),
        ]

    async def stop(self) -> None:
        self.draining = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.durables.stop()
        await self.dedup.close()
        await self.store.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.durables.tick(time.monotonic())
            await self.durables.save()

    async def _retention_loop(self) -> None:
        rules = self.config.retention_rules()
        if not rules:
            return
        while True:
            try:
                removed = await self.store.trim(rules, int(time.time() * 1000))
                if removed:
                    self.log.info("retention removed %d events", removed)
            except BrokerError as exc:
                self.log.error("retention failed: %s", exc)
            await asyncio.sleep(5.0)

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

    def stable_head(self) -> int:
        """The highest id below which every staged batch is stored."""
        return self.pipeline.stable_head()

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
        self, principal: Principal, subject: str, events: Sequence[CloudEvent]
    ) -> Prepared:
        """See :meth:`Pipeline.prepare`."""
        return await self.pipeline.prepare(principal, subject, events)

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
        """See :meth:`Ephemerals.subscribe`."""
        return await self.ephemerals.subscribe(principal, pattern, queue, buffer, start)

    def unsubscribe(self, sub: EphemeralSubscription) -> None:
        self.ephemerals.unsubscribe(sub)

    # -- durables ---------------------------------------------------------------------------

    async def create_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        *,
        queue: str = "",
        start: StartSpec = FROM_NEW,
        max_in_flight: int = 0,
        ack_wait: float = 0.0,
        max_deliveries: int = 0,
        endpoint_url: str = "",
    ) -> DurableConsumer:
        """The durable ``name``, created with these settings when it does not exist."""
        return await self.durables.create(
            principal,
            name,
            pattern,
            queue=queue,
            start=start,
            max_in_flight=max_in_flight,
            ack_wait=ack_wait,
            max_deliveries=max_deliveries,
            endpoint_url=endpoint_url,
        )

    def check_endpoint(self, url: str) -> None:
        self.durables.check_endpoint(url)

    async def subscribe_durable(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        *,
        queue: str = "",
        start: StartSpec = FROM_NEW,
        max_in_flight: int = 0,
        ack_wait: float = 0.0,
        max_deliveries: int = 0,
    ) -> DurableSession:
        """Binds a stream to the durable ``name`` (created on first use)."""
        return await self.durables.subscribe(
            principal,
            name,
            pattern,
            queue=queue,
            start=start,
            max_in_flight=max_in_flight,
            ack_wait=ack_wait,
            max_deliveries=max_deliveries,
        )

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

    def acknowledge(
        self,
        principal: Principal,
        name: str,
        ack_ids: list[int],
        nack_ids: list[int],
        nack_delay: float = 0.0,
    ) -> None:
        self.durables.acknowledge(principal, name, ack_ids, nack_ids, nack_delay)

    def durable(self, org: str, name: str) -> DurableConsumer:
        return self.durables.get(org, name)

    async def delete_durable(self, org: str, name: str) -> None:
        await self.durables.delete(org, name)

    async def redrive(self, org: str, name: str, ids: Sequence[int] | None) -> int:
        return await self.durables.redrive(org, name, ids)

    # -- request / reply, history -------------------------------------------------------------

    async def request(
        self, principal: Principal, subject: str, event: CloudEvent, timeout: float
    ) -> CloudEvent:
        return await self.requests.request(principal, subject, event, timeout)

    async def fetch_frame(self, org: str, event_id: int) -> bytes | None:
        return await self.history.fetch_frame(org, event_id)

    async def get_event(self, org: str, event_id: int) -> broker_pb2.StoredEvent:
        return await self.history.get_event(org, event_id)

    async def query(
        self,
        org: str,
        pattern: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        end_ms: int = 0,
        limit: int = 100,
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """See :meth:`History.query`."""
        return await self.history.query(
            org, pattern, after_id=after_id, start_ms=start_ms, end_ms=end_ms, limit=limit
        )
