"""Durables across nodes: the owner model (README, "Running a cluster").

Each durable is run by one node, its *owner*: the node holding the lease
``durable/<org>/<name>`` (:data:`LEASE_TTL` 3 s, renewed every second). Only the owner runs
the durable's engine (:class:`~broker.delivery.DurableConsumer`: acks, nacks with delay, ack
deadlines, max deliveries, dead letters), so every delivery rule has one copy. A stream bound
on any node is a :class:`RelayedStream`; its deliveries come from a session the owner binds
for it (a :class:`_Forward` outbox), in this node or, through the backbone, in another; its
acks and nacks go to the owner. Fetch, Acknowledge, create, delete and redrive on another
node than the owner are calls to the owner.

A node takes a durable on when it needs it and nobody holds its lease: it loads the
durable's position and pending deliveries from the shared store, so the deliveries its last
owner handed out and nobody acked are due again (at-least-once). That is how a durable moves
when its owner stops (it releases the lease) or dies (the lease runs out): each relay checks
every second who owns its durable, and binds again to the new owner, or takes it on.

Messages between nodes (:meth:`Backbone.send` one way, :meth:`Backbone.call` with an
answer) are a JSON head and raw bytes (delivery frames): see :func:`encode`. One way:
``deliver`` and ``close`` (owner to relay), ``s.ack``, ``s.nack``, ``s.detach`` and ``hold``
(relay to owner; ``hold`` every second says the relay's sessions are alive: the owner unbinds
the sessions of a relay silent for :data:`SILENT_AFTER`). Calls: ``attach``, ``ack``,
``fetch``, ``create``, ``delete``, ``redrive``; an error travels as its code, reason,
sentence and hint and is raised again on the caller's node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from lockgate.broker.auth import Principal
from lockgate.broker.backbone import Backbone
from lockgate.broker.delivery import DurableConsumer, DurableSession, Outbox
from lockgate.broker.errors import (
    AlreadyExists,
    BrokerError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from lockgate.broker.leases import Leases
from lockgate.broker.positions import StartSpec
from lockgate.broker.store import ConsumerRecord

if TYPE_CHECKING:
    from lockgate.broker.durables import DurableOptions, Durables

__all__ = [
    "LEASE_TTL",
    "RENEW_EVERY",
    "SILENT_AFTER",
    "WEBHOOK_EVERY",
    "DurableRelay",
    "RelayedStream",
    "decode",
    "durable_lease",
    "encode",
]

LEASE_TTL = 3.0
"""Seconds a durable's ownership lasts unless renewed."""
RENEW_EVERY = 1.0
"""How often the owner renews, and a relay holds its sessions and checks the owner."""
SILENT_AFTER = 3.5
"""Seconds after which the owner unbinds the sessions of a relay it no longer hears."""
WEBHOOK_EVERY = 5
"""Every how many rounds a node looks for webhook durables that nobody runs."""
_CALL_TIMEOUT = 10.0
log = logging.getLogger("lockgate.durables")


def durable_lease(org: str, name: str) -> str:
    return f"durable/{org}/{name}"


# -- messages --------------------------------------------------------------------------------


def encode(head: dict[str, Any], body: bytes = b"") -> bytes:
    """A message: 4 bytes of head length, the head as JSON, then ``body`` as it is."""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return len(raw).to_bytes(4, "big") + raw + body


def decode(message: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(message[:4], "big")
    head: dict[str, Any] = json.loads(message[4 : 4 + n])
    return head, message[4 + n :]


_ERRORS: dict[str, type[BrokerError]] = {
    cls.code.name: cls
    for cls in (
        BrokerError,
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        AlreadyExists,
        FailedPrecondition,
        NotFound,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
    )
}


def _error_out(err: BrokerError) -> dict[str, Any]:
    return {
        "code": err.code.name,
        "reason": err.reason,
        "message": err.message,
        "hint": err.hint,
        "metadata": err.metadata,
    }


def _error_in(e: dict[str, Any]) -> BrokerError:
    cls = _ERRORS.get(str(e.get("code")), BrokerError)
    return cls(
        str(e["message"]),
        reason=str(e["reason"]),
        hint=str(e.get("hint", "")),
        metadata={str(k): str(v) for k, v in dict(e.get("metadata", {})).items()},
    )


def _principal_out(p: Principal) -> dict[str, Any]:
    return {"org": p.org, "agent": p.agent, "roles": sorted(p.roles)}


def _principal_in(d: dict[str, Any]) -> Principal:
    return Principal(str(d["org"]), str(d["agent"]), frozenset(map(str, d["roles"])))


def _options_out(o: DurableOptions) -> dict[str, Any]:
    return {
        "queue": o.queue,
        "start": [o.start.policy, o.start.since_ms, o.start.after_id],
        "max_in_flight": o.max_in_flight,
        "ack_wait": o.ack_wait,
        "max_deliveries": o.max_deliveries,
        "endpoint_url": o.endpoint_url,
    }


def _options_in(d: dict[str, Any]) -> DurableOptions:
    from lockgate.broker.durables import DurableOptions

    policy, since_ms, after_id = d["start"]
    return DurableOptions(
        queue=str(d["queue"]),
        start=StartSpec(int(policy), int(since_ms), int(after_id)),
        max_in_flight=int(d["max_in_flight"]),
        ack_wait=float(d["ack_wait"]),
        max_deliveries=int(d["max_deliveries"]),
        endpoint_url=str(d["endpoint_url"]),
    )


def _record_out(rec: ConsumerRecord) -> dict[str, Any]:
    return {
        "pattern": rec.pattern,
        "queue": rec.queue,
        "ack_wait_ms": rec.ack_wait_ms,
        "max_deliveries": rec.max_deliveries,
        "max_in_flight": rec.max_in_flight,
        "endpoint_url": rec.endpoint_url,
        "owner": rec.owner,
    }


def _settled() -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


# -- the session the owner binds for a stream --------------------------------------------------


class _Forward(Outbox):
    """The outbox of a session the owner bound for a stream: deliveries go on to the
    stream (in this node, or through the backbone to the relay's node); a close that is not
    the end of the durable makes the stream bind again instead of ending it."""

    def __init__(self, relay: DurableRelay, key: str, node: str) -> None:
        super().__init__(1 << 20)
        self.relay = relay
        self.key = key
        self.node = node
        """The stream's node (this one: the stream is here)."""
        self.session: DurableSession | None = None
        self.quiet = False
        """Set when the relay itself unbinds: nothing to tell it."""

    def put(self, frames: bytes, count: int = 1) -> None:
        relay = self.relay
        if self.node == relay.node_id:
            stream = relay.streams.get(self.key)
            if stream is not None:
                stream.outbox.put(frames, count)
        else:
            relay.backbone.send(
                self.node, encode({"op": "deliver", "key": self.key, "count": count}, frames)
            )

    def close(self, error: BrokerError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.quiet:
            return
        session = self.session
        deleted = session is not None and session.consumer.deleted
        relay = self.relay
        if self.node == relay.node_id:
            stream = relay.streams.get(self.key)
            if stream is not None:
                stream.owner_closed(deleted or relay.stopping, error)
        else:
            relay.backbone.send(self.node, encode({"op": "close", "key": self.key, "end": deleted}))


# -- the stream side -----------------------------------------------------------------------------


class RelayedStream:
    """A stream bound to a durable in a cluster (a :class:`~broker.delivery.BoundSession`):
    its outbox is the stream's; acks and nacks go to wherever the owner is."""

    def __init__(
        self,
        relay: DurableRelay,
        key: str,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions,
        max_message_bytes: int,
    ) -> None:
        self.relay = relay
        self.key = key
        self.principal = principal
        self.name = name
        self.pattern = pattern
        self.options = options
        self.outbox = Outbox(max_message_bytes)
        self.local: DurableSession | None = None
        """The owner's session for this stream when the owner is this node."""
        self.owner: str | None = None
        """The owner's node id while bound; None while binding again."""
        self.on_close: list[Any] = []

    @property
    def lease(self) -> str:
        return durable_lease(self.principal.org, self.name)

    def ack(self, ids: list[int], *, strict: bool = False) -> Awaitable[None]:
        if self.local is not None:
            return self.local.ack(ids, strict=strict)
        if strict:
            return self._strict({"ack": ids, "nack": []})
        if self.owner is not None:  # unbound: the owner redelivers them (at-least-once)
            self.relay.send(self.owner, {"op": "s.ack", "key": self.key, "ids": ids})
        return _settled()

    def nack(self, ids: list[int], delay: float, *, strict: bool = False) -> Awaitable[None]:
        if self.local is not None:
            return self.local.nack(ids, delay, strict=strict)
        if strict:
            return self._strict({"ack": [], "nack": ids, "delay": delay})
        if self.owner is not None:
            self.relay.send(
                self.owner, {"op": "s.nack", "key": self.key, "ids": ids, "delay": delay}
            )
        return _settled()

    async def _strict(self, args: dict[str, Any]) -> None:
        await self.relay.forward(self.principal, self.name, "ack", args)

    def close(self) -> None:
        self.relay.close_stream(self)

    def owner_closed(self, end: bool, error: BrokerError | None = None) -> None:
        """The owner's session for this stream went away: the end of the durable (or of
        this node), or the owner stopped serving it (bind again)."""
        self.local = None
        self.owner = None
        if end:
            self.relay.close_stream(self, error)
        else:
            self.relay.wake()


# -- the node's part -----------------------------------------------------------------------------


class DurableRelay:
    """This node's side of the owner model: owner of some durables, relay for others."""

    def __init__(
        self, node_id: str, backbone: Backbone, leases: Leases, durables: Durables
    ) -> None:
        self.node_id = node_id
        self.backbone = backbone
        self.leases = leases
        self.durables = durables
        self.stopping = False
        self.streams: dict[str, RelayedStream] = {}
        """This node's streams bound to durables, by key."""
        self.remote: dict[str, DurableSession] = {}
        """Sessions this node (the owner) bound for streams of other nodes, by key."""
        self._heard: dict[str, float] = {}
        """Relay node -> when it last held its sessions (monotonic)."""
        self._renewed: dict[tuple[str, str], float] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._keys = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lockgate-durable-relay")

    async def stop(self) -> None:
        """Stops serving: the streams here end, the sessions bound for other nodes' streams
        tell them to bind again (to whoever takes the durables on next)."""
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for stream in list(self.streams.values()):
            self.close_stream(stream)

    async def release_all(self) -> None:
        """Gives up the leases of the durables this node ran (their state is stored)."""
        for org, name in list(self._renewed):
            try:
                await self.leases.release(durable_lease(org, name), self.node_id)
            except BrokerError as exc:  # it runs out on its own
                log.warning("durable.lease.release_failed: %s", exc.message)
        self._renewed.clear()

    def close_all(self, error: BrokerError) -> None:
        for stream in list(self.streams.values()):
            self.close_stream(stream, error)

    def wake(self) -> None:
        self._wake.set()

    # -- ownership ---------------------------------------------------------------------------

    async def route(self, org: str, name: str) -> DurableConsumer | str | None:
        """Who runs durable ``name``: this node's consumer, the owner's node id, or None
        when the store has no such durable (this node then holds its lease: the caller
        creates it, or calls :meth:`let_go`)."""
        key = (org, name)
        consumer = self.durables.consumers.get(key)
        if consumer is not None:
            return consumer
        if self.stopping:
            raise Unavailable(
                "the broker is shutting down", reason="SHUTTING_DOWN", hint="retry on another node"
            )
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            consumer = self.durables.consumers.get(key)
            if consumer is not None:
                return consumer
            lease = durable_lease(org, name)
            holder = await self.leases.holder(lease)
            if holder is not None and holder != self.node_id:
                return holder
            sent = time.monotonic()
            if not await self.leases.acquire(lease, self.node_id, LEASE_TTL):
                holder = await self.leases.holder(lease)
                if holder is None:
                    raise Unavailable(f"durable {name!r} is changing owner", hint="retry")
                return holder
            self._renewed[key] = sent
            for rec in await self.durables.store.load_consumers():
                if (rec.org, rec.name) == key:
                    log.info("durable.owner.took: %s/%s", org, name)
                    return self.durables.adopt(rec, announce=True)
            return None

    async def let_go(self, org: str, name: str) -> None:
        """Releases the lease of a durable this node holds but does not run."""
        if (org, name) in self.durables.consumers:
            return
        self._renewed.pop((org, name), None)
        await self.leases.release(durable_lease(org, name), self.node_id)

    async def _renew(self) -> None:
        now = time.monotonic()
        for key in list(self.durables.consumers):
            try:
                held = await self.leases.acquire(durable_lease(*key), self.node_id, LEASE_TTL)
            except BrokerError as exc:
                log.error("durable.lease.unavailable: %s", exc.message)
                held = now - self._renewed.get(key, now) < LEASE_TTL  # surely ours until then
            else:
                if held:
                    self._renewed[key] = now
            if not held:
                log.error("durable.lease.lost: %s/%s", *key)
                await self.durables.disown(*key)
                self._renewed.pop(key, None)
        for node, heard in list(self._heard.items()):
            if now - heard > SILENT_AFTER:
                del self._heard[node]
                for skey, session in list(self.remote.items()):
                    if isinstance(session.outbox, _Forward) and session.outbox.node == node:
                        self._unbind(skey)

    # -- streams (this node's side) ------------------------------------------------------------

    async def subscribe(
        self,
        principal: Principal,
        name: str,
        pattern: str,
        options: DurableOptions,
        max_message_bytes: int,
    ) -> RelayedStream:
        key = f"{self.node_id}/{next(self._keys)}"
        stream = RelayedStream(self, key, principal, name, pattern, options, max_message_bytes)
        self.streams[key] = stream
        try:
            await self._bind(stream)
        except BaseException:
            self.streams.pop(key, None)
            raise
        return stream

    async def _bind(self, stream: RelayedStream) -> None:
        p, name = stream.principal, stream.name
        route = await self.route(p.org, name)
        if isinstance(route, str):
            head = {
                "op": "attach",
                "key": stream.key,
                "relay": self.node_id,
                "org": p.org,
                "name": name,
                "pattern": stream.pattern,
                "options": _options_out(stream.options),
                "principal": _principal_out(p),
            }
            stream.owner = route
            try:
                await self.call(route, head)
            except BaseException:
                stream.owner = None
                raise
            return
        consumer = await self.durables.bind_here(p, name, stream.pattern, stream.options, route)
        stream.local = self.bind_here(stream.key, self.node_id, p, consumer)
        stream.owner = self.node_id

    async def _attach(self, head: dict[str, Any]) -> None:
        """(The owner.) Binds a session for a stream of node ``relay``."""
        p = _principal_in(head["principal"])
        route = await self.route(p.org, str(head["name"]))
        if isinstance(route, str):
            raise Unavailable(f"durable {head['name']!r} has moved to another node", hint="retry")
        key, relay = str(head["key"]), str(head["relay"])
        options = _options_in(head["options"])
        consumer = await self.durables.bind_here(
            p, str(head["name"]), str(head["pattern"]), options, route
        )
        self.bind_here(key, relay, p, consumer)
        self._heard[relay] = time.monotonic()

    def bind_here(
        self, key: str, node: str, principal: Principal, consumer: DurableConsumer
    ) -> DurableSession:
        """Binds, on this node's ``consumer``, a session whose deliveries go to stream
        ``key`` of ``node``."""
        outbox = _Forward(self, key, node)
        session = consumer.attach(
            self.durables.config.max_message_bytes, principal=principal, outbox=outbox
        )
        outbox.session = session
        if node != self.node_id:
            self.remote[key] = session
        return session

    def _unbind(self, key: str) -> None:
        session = self.remote.pop(key, None)
        if session is not None:
            if isinstance(session.outbox, _Forward):
                session.outbox.quiet = True
            session.consumer.detach(session)

    def close_stream(self, stream: RelayedStream, error: BrokerError | None = None) -> None:
        if self.streams.pop(stream.key, None) is None:
            return
        if stream.local is not None:
            local, stream.local = stream.local, None
            if isinstance(local.outbox, _Forward):
                local.outbox.quiet = True
            local.consumer.detach(local)
        elif stream.owner is not None and stream.owner != self.node_id:
            self.send(stream.owner, {"op": "s.detach", "key": stream.key})
        stream.owner = None
        stream.outbox.close(error)
        for hook in stream.on_close:
            hook()
        stream.on_close.clear()

    async def _check_streams(self) -> None:
        """(A relay.) Binds again the streams whose owner changed or let them go, and tells
        each owner which of its sessions are still alive."""
        held: dict[str, list[str]] = {}
        owners: dict[str, str | None] = {}
        for stream in list(self.streams.values()):
            if stream.local is not None:
                continue
            lease = stream.lease
            if lease not in owners:
                owners[lease] = await self.leases.holder(lease)
            if stream.owner is not None and owners[lease] == stream.owner:
                held.setdefault(stream.owner, []).append(stream.key)
                continue
            if stream.owner is not None:  # the owner changed: leave the old one
                self.send(stream.owner, {"op": "s.detach", "key": stream.key})
                stream.owner = None
            try:
                await self._bind(stream)
            except BrokerError as exc:
                if isinstance(exc, NotFound | PermissionDenied | FailedPrecondition):
                    self.close_stream(stream, exc)
                else:
                    log.info("durable.relay.rebind_later: %s", exc.message)
            owners.pop(lease, None)
        for owner, keys in held.items():
            self.send(owner, {"op": "hold", "relay": self.node_id, "keys": keys})

    async def _claim_webhooks(self) -> None:
        """Takes on the webhook durables nobody runs: their receiver is the dispatcher of
        the node that runs them, so one that no stream needs must still have an owner."""
        for rec in await self.durables.store.load_consumers():
            key = (rec.org, rec.name)
            if (
                rec.endpoint_url
                and key not in self.durables.consumers
                and await self.leases.holder(durable_lease(*key)) is None
                and await self.route(*key) is None  # deleted meanwhile
            ):
                await self.let_go(*key)

    async def _run(self) -> None:
        for turn in itertools.count():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RENEW_EVERY)
            self._wake.clear()
            try:
                await self._renew()
                await self._check_streams()
                if turn % WEBHOOK_EVERY == 0:
                    await self._claim_webhooks()
            except BrokerError as exc:
                log.error("durable.relay.failed: %s", exc.message)

    # -- messages ----------------------------------------------------------------------------

    def send(self, node: str, head: dict[str, Any], body: bytes = b"") -> None:
        self.backbone.send(node, encode(head, body))

    async def call(
        self, node: str, head: dict[str, Any], timeout: float = _CALL_TIMEOUT
    ) -> tuple[dict[str, Any], bytes]:
        answer, body = decode(await self.backbone.call(node, encode(head), timeout))
        if "error" in answer:
            raise _error_in(answer["error"])
        return answer, body

    async def forward(
        self,
        principal: Principal,
        name: str,
        op: str,
        args: dict[str, Any],
        timeout: float = _CALL_TIMEOUT,
    ) -> bytes:
        """Runs ``op`` (``ack``, ``fetch``, ``create``, ``delete``, ``redrive``) on the
        owner of durable ``name`` (the caller found it is another node)."""
        route = await self.route(principal.org, name)
        if not isinstance(route, str):
            raise Unavailable(f"durable {name!r} has moved to this node", hint="retry")
        head = {"op": op, "name": name, "principal": _principal_out(principal), **args}
        return (await self.call(route, head, timeout))[1]

    def on_message(self, message: bytes) -> None:
        head, body = decode(message)
        op = head.get("op")
        key = str(head.get("key", ""))
        if op == "deliver":
            stream = self.streams.get(key)
            if stream is not None:
                stream.outbox.put(body, int(head["count"]))
        elif op == "close":
            stream = self.streams.get(key)
            if stream is not None:
                stream.owner_closed(bool(head["end"]))
        elif op in ("s.ack", "s.nack"):
            session = self.remote.get(key)
            if session is not None:
                ids = [int(i) for i in head["ids"]]
                if op == "s.ack":
                    session.ack(ids)
                else:
                    session.nack(ids, float(head["delay"]))
        elif op == "s.detach":
            self._unbind(key)
        elif op == "hold":
            relay = str(head["relay"])
            self._heard[relay] = time.monotonic()
            for k in head["keys"]:
                if k not in self.remote:  # forgotten here (unbound): bind again
                    self.send(relay, {"op": "close", "key": k, "end": False})

    async def on_call(self, message: bytes) -> bytes:
        head, _ = decode(message)
        try:
            if self.stopping:
                raise Unavailable(
                    "the broker is shutting down", reason="SHUTTING_DOWN", hint="retry"
                )
            out = await self._answer(head)
        except BrokerError as err:
            return encode({"error": _error_out(err)})
        return encode({"ok": True}, out)

    async def _answer(self, head: dict[str, Any]) -> bytes:
        op = head["op"]
        if op == "attach":
            await self._attach(head)
            return b""
        p = _principal_in(head["principal"])
        name = str(head["name"])
        d = self.durables
        route = await self.route(p.org, name)
        if isinstance(route, str):
            raise Unavailable(f"durable {name!r} has moved to another node", hint="retry")
        if op == "ack":
            if head.get("term"):
                await d.terminate(p, name, [int(i) for i in head["term"]])
            ack = [int(i) for i in head["ack"]]
            nack = [int(i) for i in head["nack"]]
            await d.acknowledge(p, name, ack, nack, float(head.get("delay", 0.0)))
            return b""
        if op == "fetch":
            start = StartSpec(*map(int, head["start"]))
            return await d.fetch(
                p,
                name,
                int(head["max"]),
                float(head["wait"]),
                pattern=str(head["pattern"]),
                start=start,
            )
        if op == "create":
            c = await d.create(p, name, str(head["pattern"]), _options_in(head["options"]))
            return encode({"rec": _record_out(c.rec), "secret": c.new_secret})
        if op == "delete":
            await d.delete(p.org, name)
            return b""
        if op == "redrive":
            ids = head["ids"]
            n = await d.redrive(p.org, name, None if ids is None else [int(i) for i in ids])
            return str(n).encode()
        raise InvalidArgument(f"unknown durable operation {op!r}")


def record_view(org: str, name: str, answer: bytes) -> tuple[ConsumerRecord, str]:
    """The record (and a new webhook secret) an owner's ``create`` answered with."""
    head, _ = decode(answer)
    r = head["rec"]
    rec = ConsumerRecord(
        org=org,
        name=name,
        pattern=str(r["pattern"]),
        queue=str(r["queue"]),
        ack_wait_ms=int(r["ack_wait_ms"]),
        max_deliveries=int(r["max_deliveries"]),
        max_in_flight=int(r["max_in_flight"]),
        endpoint_url=str(r["endpoint_url"]),
        owner=str(r["owner"]),
    )
    return rec, str(head["secret"])
