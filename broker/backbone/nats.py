"""The cluster backbone: the nodes of many processes over core NATS (nats-py).

One :class:`NatsBackbone` per node process, one NATS connection. Its messages and subjects
are :mod:`broker.backbone.natsformat`'s:

* **fan-out**: the committing node hands a batch to its own members' subscribers directly
  and publishes it once on ``lgfan.<org>.<subject>``. Each node subscribes to what its
  subscribers listen to (:class:`~broker.backbone.Interest`, told by the member): one plain
  NATS subscription per pattern with subscribers on their own (a node skips the batches it
  published itself), and one queue subscription per pattern and queue group (queue
  ``<org>.<group>``), so NATS picks ONE node per event batch for a group, the publishing node
  included; that node spreads the batch over its members of the group.
* **requests** go to ``lgreq.<org>.<subject>``, on which a node subscribes only while it has
  a subscriber (refcounted interests), so NATS's no-responders answer (status 503) means
  nobody listens anywhere: :meth:`request` is False. A node that takes a request answers a
  small ack; the first positive one makes :meth:`request` True.
* **replies** go to the node whose request waits (``lgreply.<node>.…``; the inbox names it).
* **notices** go to ``lgnotice.<kind>``; no node handles its own.

Delivery is at-most-once, like ephemeral subscriptions. One task publishes, in call order,
so one publisher's batches of a subject stay in order. Nothing waits on the event loop:
publishes queue up to ``max_pending_bytes`` (beyond, and while NATS is unreachable, they are
dropped, counted in :attr:`NatsBackbone.dropped` and logged), nats-py's own buffer is bounded
(``pending_size``, a bounded flush), and each subscription drops what it holds beyond its
limits (a slow node). Where the Protocol lets a caller learn of a failure it does:
:meth:`request` and :meth:`settle` raise ``Unavailable`` when NATS is unreachable or does not
answer within ``answer_timeout``.

Example::

    backbone = NatsBackbone("nats://127.0.0.1:4222")
    await backbone.open()
    broker = Broker(config, store, backbone=backbone)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from lockgate.broker.backbone import CloudEvent, Interest, Member, Notice, NoticeKind
from lockgate.broker.backbone.natsformat import (
    H_COUNT,
    H_HEARD,
    H_IDS,
    H_NAME,
    H_NODE,
    H_ORG,
    H_ORIGIN,
    BadMessage,
    Names,
    decode_ids,
    encode_ids,
    header_text,
    node_of_inbox,
    text_of_header,
)
from lockgate.broker.errors import Unavailable
from lockgate.broker.extras import missing_extra
from lockgate.broker.natsflush import processed
from lockgate.broker.redaction import shown_url

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["NatsBackbone"]

_KINDS: frozenset[str] = frozenset(get_args(NoticeKind))
_STATUS = "Status"
_NO_RESPONDERS = "503"
_MAX_BATCH_EVENTS = 1 << 20
"""More ids than any batch holds: a header claiming more is refused unread."""


@dataclass(eq=False)
class _Joined:
    member: Member
    interests: set[Interest] = field(default_factory=set)


@dataclass(eq=False)
class _Ack:
    """A request waiting to hear whether a node took it."""

    heard: asyncio.Future[bool]
    refused: bool = False
    """A node has the subject's interest on NATS but no subscriber that takes it."""


class NatsBackbone:
    """:class:`~broker.backbone.Backbone` between the nodes of a cluster, over core NATS."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "lg",
        name: str = "lockgate",
        connect_timeout: float = 5.0,
        answer_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
        ping_interval: float = 2.0,
        max_pending_bytes: int = 16 << 20,
        sub_pending_msgs: int = 16_384,
        sub_pending_bytes: int = 32 << 20,
    ) -> None:
        self.url = url
        self.id = secrets.token_hex(8)
        """This connection's id (``Lg-Origin``): a node skips the batches it published."""
        self.dropped = 0
        """Messages not sent: NATS unreachable, or more queued than ``max_pending_bytes``."""
        self.names = Names(prefix)
        self.log = logging.getLogger("lockgate.backbone")
        self._name = name
        self._connect_timeout = connect_timeout
        self._answer_timeout = answer_timeout
        self._reconnect_wait = reconnect_wait
        self._ping_interval = ping_interval
        self._max_pending = max_pending_bytes
        self._sub_msgs = sub_pending_msgs
        self._sub_bytes = sub_pending_bytes
        self._nc: Client | None = None
        self._members: list[_Joined] = []
        self._wanted: dict[Interest, int] = {}
        self._subs: dict[Interest, tuple[Subscription, Subscription]] = {}
        self._node_subs: dict[str, list[Subscription]] = {}  # replies, messages, calls
        self._calls: set[asyncio.Task[None]] = set()
        self._fixed: list[Subscription] = []
        self._out: deque[tuple[str, bytes, str, dict[str, str] | None]] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        self._changes = 0  # interest changes so far
        self._applied = 0  # changes on NATS (the server has them)
        self._applied_event = asyncio.Event()
        self._acks: dict[str, _Ack] = {}
        self._ack_prefix = ""
        self._tokens = itertools.count(1)
        self._turn = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._logged: dict[str, float] = {}
        self._last_error = ""

    # -- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connects (retrying for up to ``connect_timeout``), then keeps reconnecting for
        ever when the connection is lost; raises ``Unavailable`` when NATS cannot be reached."""
        try:
            from nats.aio.client import Client
        except ImportError as exc:  # the optional extra
            raise missing_extra("the NATS backbone", exc) from None
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[u.strip() for u in self.url.split(",")],
                    name=self._name,
                    connect_timeout=max(1, int(self._connect_timeout)),
                    reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    ping_interval=self._ping_interval,  # type: ignore[arg-type]
                    max_outstanding_pings=2,
                    pending_size=self._max_pending,
                    flush_timeout=self._answer_timeout,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self._connect_timeout,
            )
        except Exception as exc:  # nats-py raises its own, OSError and TimeoutError
            self._closing = True  # no "disconnected" line for a connection never made
            await _quietly_close(nc)
            self._closing = False
            why = self._last_error or _why(exc)  # connect retries until the timeout
            raise Unavailable(
                f"the NATS backbone at {shown_url(self.url)} cannot be reached within "
                f"{self._connect_timeout:g} s" + (f": {why}" if why != "TimeoutError" else ""),
                hint="start NATS or correct the backbone URL (nats://HOST:4222)",
            ) from None
        self._nc = nc
        self._ack_prefix = nc.new_inbox()
        self._fixed = [
            await self._subscribe(self.names.notices(), "", self._on_notice),
            await self._subscribe(f"{self._ack_prefix}.*", "", self._on_ack),
        ]
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="lockgate-backbone-send"),
            asyncio.create_task(self._interest_loop(), name="lockgate-backbone-interest"),
        ]
        self._dirty.set()  # members that joined before open

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._dirty.set()
        pending = set(self._tasks)
        for _ in range(50):
            # nats-py swallows a cancellation in its flush, so a loop inside publish can
            # miss one: cancel again until the loops are gone (they see _closing too).
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
            if not pending:
                break
        self._tasks = []
        for j in self._members:
            j.member.watch(None)
        self._members.clear()
        self._fail_acks("the backbone is closing")
        nc, self._nc = self._nc, None
        if nc is not None:
            await _quietly_close(nc)
        for call in list(self._calls):
            call.cancel()
        self._subs.clear()
        self._node_subs.clear()
        self._out.clear()
        self._out_bytes = 0

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def join(self, member: Member) -> None:
        if any(j.member is member for j in self._members):
            return
        joined = _Joined(member)
        self._members.append(joined)
        member.watch(lambda interest, on: self._interest(joined, interest, on))
        self._changed()  # its replies' subscription

    def leave(self, member: Member) -> None:
        joined = next((j for j in self._members if j.member is member), None)
        if joined is None:
            return
        member.watch(None)
        self._members.remove(joined)
        for interest in list(joined.interests):
            self._interest(joined, interest, False)
        self._changed()

    async def settle(self, org: str = "") -> None:
        """Waits until NATS has every interest declared so far (a subscribe and a PING
        round trip); raises ``Unavailable`` when it is not connected or does not answer."""
        target = self._changes
        deadline = time.monotonic() + self._answer_timeout
        while self._applied < target:
            if not self.connected:
                raise _unreachable("the subscription cannot reach the other nodes")
            self._applied_event.clear()
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(self._applied_event.wait(), max(remaining, 0.0))
            except TimeoutError:
                raise _unreachable(
                    f"NATS did not confirm the subscription within {self._answer_timeout:g} s"
                ) from None

    # -- the Protocol's calls ---------------------------------------------------------------

    def fan_out(self, org: str, subject: str, frames: bytes, count: int, ids: list[int]) -> None:
        # While NATS is unreachable this node's queue groups are served here, since no other
        # node can be picked for them.
        queues = not self.connected
        for j in self._members:
            j.member.deliver(org, subject, frames, count, ids, queues=queues)
        headers = {H_IDS: encode_ids(ids), H_COUNT: str(count), H_ORIGIN: self.id}
        self._send(self.names.fan(org, subject), frames, "", headers)

    async def request(
        self, origin: str, org: str, subject: str, frame: bytes, ids: list[int]
    ) -> bool:
        if not self.connected:
            raise _unreachable("the request cannot reach the other nodes")
        token = str(next(self._tokens))
        ack = _Ack(asyncio.get_running_loop().create_future())
        self._acks[token] = ack
        try:
            headers = {H_IDS: encode_ids(ids), H_COUNT: "1", H_ORIGIN: self.id}
            reply = f"{self._ack_prefix}.{token}"
            if not self._send(self.names.req(org, subject), frame, reply, headers):
                raise _unreachable("the request cannot reach the other nodes")
            try:
                return await asyncio.wait_for(asyncio.shield(ack.heard), self._answer_timeout)
            except TimeoutError:
                # Subscribed somewhere, but nobody there takes this subject; or a node let
                # go of its subscription while NATS routed the request to it (it drops it
                # unanswered): NATS is there, nobody listens.
                if ack.refused or await self._alive():
                    return False
                raise _unreachable(
                    f"no node answered the request within {self._answer_timeout:g} s"
                ) from None
        finally:
            self._acks.pop(token, None)

    async def _alive(self) -> bool:
        """Whether NATS answers a PING within ``answer_timeout`` (so it has everything sent
        before it)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        # Never cancel nats-py's flush: the PONG of a cancelled one raises InvalidStateError
        # in its read loop, which then stops reading for good (nats-py 2.x). It runs on
        # under its own long timeout while this wait gives up.
        flush = asyncio.ensure_future(processed(nc, timeout=60))
        flush.add_done_callback(_consume)
        done, _ = await asyncio.wait({flush}, timeout=self._answer_timeout)
        return bool(done) and not flush.cancelled() and flush.exception() is None

    def reply(self, org: str, inbox: str, event: CloudEvent) -> None:
        node = node_of_inbox(inbox)
        for j in self._members:
            if (not node or j.member.node_id == node) and j.member.deliver_reply(org, inbox, event):
                return
        if node and not any(j.member.node_id == node for j in self._members):
            self._send(self.names.reply(node, org, inbox), event.SerializeToString(), "", None)

    def notify(self, notice: Notice) -> None:
        for j in list(self._members):
            if j.member.node_id != notice.origin:
                j.member.on_notice(notice)
        headers = {
            H_ORIGIN: self.id,
            H_NODE: header_text(notice.origin),
            H_ORG: header_text(notice.org),
            H_NAME: header_text(notice.name),
        }
        self._send(self.names.notice(notice.kind), b"", "", headers)

    def send(self, node: str, body: bytes) -> None:
        member = self._member(node)
        if member is not None:
            # Later, as over the network; call_soon keeps the send order.
            asyncio.get_running_loop().call_soon(self._hand_message, node, body)
            return
        self._send(self.names.node(node), body, "", None)

    def _hand_message(self, node: str, body: bytes) -> None:
        member = self._member(node)  # it may have left meanwhile
        if member is not None:
            member.on_message(body)

    async def call(self, node: str, body: bytes, timeout: float) -> bytes:
        member = self._member(node)
        try:
            if member is not None:
                return await asyncio.wait_for(member.on_call(body), timeout)
            nc = self._nc
            if nc is None or not nc.is_connected:
                raise _unreachable(f"the call cannot reach node {node}")
            msg = await nc.request(self.names.node_call(node), body, timeout=timeout)
        except TimeoutError:  # nats-py's TimeoutError is one too
            raise Unavailable(
                f"node {node} did not answer within {timeout:g} s", hint="retry"
            ) from None
        except Unavailable:
            raise
        except Exception as exc:  # nats-py's NoRespondersError, connection errors
            if type(exc).__name__ == "NoRespondersError":
                raise Unavailable(f"node {node} is not on the backbone", hint="retry") from None
            raise _unreachable(f"the call to node {node} failed: {_why(exc)}") from None
        return bytes(msg.data)

    async def _answer(self, member: Member, body: bytes, reply: str) -> None:
        try:
            answer = await member.on_call(body)
        except Exception as exc:  # the member's bug: the caller times out, the loop goes on
            self.log.exception("backbone.nats.call_failed: %s", _why(exc))
            return
        self._send(reply, answer, "", None)

    def _member(self, node: str) -> Member | None:
        for j in self._members:
            if j.member.node_id == node:
                return j.member
        return None

    # -- sending ----------------------------------------------------------------------------

    def _send(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str] | None
    ) -> bool:
        """Queues one publish (in call order); False when it was dropped."""
        if not self.connected:
            self._drop("NATS is unreachable")
            return False
        if self._out_bytes + len(payload) > self._max_pending:
            self._drop(f"more than {self._max_pending} bytes wait to be sent")
            return False
        self._out.append((subject, payload, reply, headers))
        self._out_bytes += len(payload)
        self._wake.set()
        return True

    async def _send_loop(self) -> None:
        out = self._out
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while out and not self._closing:
                subject, payload, reply, headers = out.popleft()
                self._out_bytes -= len(payload)
                nc = self._nc
                if nc is None or not nc.is_connected:
                    self._drop("NATS is unreachable")
                    continue
                try:
                    await nc.publish(subject, payload, reply=reply, headers=headers)
                except Exception as exc:  # nats-py's errors; the loop must go on
                    self._drop(_why(exc))

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self._warn("backbone.nats.dropped", "a message to the other nodes was dropped: %s", why)

    def _warn(self, event: str, text: str, *args: object) -> None:
        """Logs ``event`` at most once a second (a lost connection drops every batch)."""
        now = time.monotonic()
        if now - self._logged.get(event, 0.0) >= 1.0:
            self._logged[event] = now
            self.log.warning(f"{event}: {text}", *args)

    # -- interest: what this node subscribes to on NATS ----------------------------------------

    def _interest(self, joined: _Joined, interest: Interest, on: bool) -> None:
        if on:
            if interest in joined.interests:
                return
            joined.interests.add(interest)
            self._wanted[interest] = self._wanted.get(interest, 0) + 1
        else:
            if interest not in joined.interests:
                return
            joined.interests.discard(interest)
            left = self._wanted.get(interest, 0) - 1
            if left > 0:
                self._wanted[interest] = left
            else:
                self._wanted.pop(interest, None)
        self._changed()

    def _changed(self) -> None:
        self._changes += 1
        self._dirty.set()

    async def _interest_loop(self) -> None:
        while not self._closing:
            await self._dirty.wait()
            self._dirty.clear()
            if self._closing:
                return
            target = self._changes
            try:
                await self._reconcile()
                if await self._alive():
                    self._applied = target
                    self._applied_event.set()
                elif self.connected:
                    raise TimeoutError("NATS did not answer a PING")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nats-py's errors: retry after a pause
                self._warn("backbone.nats.subscribe_failed", "subscribing failed: %s", _why(exc))
                await asyncio.sleep(self._reconnect_wait)
                self._dirty.set()

    async def _reconcile(self) -> None:
        nc = self._nc
        if nc is None:
            return
        for interest in [i for i in self._subs if i not in self._wanted]:
            for sub in self._subs.pop(interest):
                await sub.unsubscribe()
        for interest in [i for i in self._wanted if i not in self._subs]:
            org, pattern, queue = interest.org, interest.pattern, interest.queue
            group = self.names.queue(org, queue) if queue else ""

            async def on_fan(msg: Msg, interest: Interest = interest) -> None:
                self._on_batch(interest, msg, request=False)

            async def on_req(msg: Msg, interest: Interest = interest) -> None:
                self._on_batch(interest, msg, request=True)

            fan = await self._subscribe(self.names.fan(org, pattern), group, on_fan)
            req = await self._subscribe(self.names.req(org, pattern), group, on_req)
            self._subs[interest] = (fan, req)
        nodes = {j.member.node_id for j in self._members}
        for node in [n for n in self._node_subs if n not in nodes]:
            for sub in self._node_subs.pop(node):
                await sub.unsubscribe()
        for node in [n for n in nodes if n not in self._node_subs]:

            async def on_message(msg: Msg, node: str = node) -> None:
                member = self._member(node)
                if member is not None:
                    member.on_message(msg.data)

            async def on_call(msg: Msg, node: str = node) -> None:
                member = self._member(node)
                if member is not None and msg.reply:
                    # A task each: one slow answer must not hold up the node's other calls.
                    task = asyncio.create_task(self._answer(member, msg.data, msg.reply))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)

            self._node_subs[node] = [
                await self._subscribe(self.names.replies(node), "", self._on_reply),
                await self._subscribe(self.names.node(node), "", on_message),
                await self._subscribe(self.names.node_call(node), "", on_call),
            ]

    async def _subscribe(
        self, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]
    ) -> Subscription:
        """A subscription that drops (and reports) what it holds beyond its limits."""
        assert self._nc is not None
        return await self._nc.subscribe(
            subject,
            queue,
            cb=cb,
            pending_msgs_limit=self._sub_msgs,
            pending_bytes_limit=self._sub_bytes,
        )

    # -- receiving ----------------------------------------------------------------------------

    def _on_batch(self, interest: Interest, msg: Msg, *, request: bool) -> None:
        headers = msg.headers or {}
        if not request and not interest.queue and headers.get(H_ORIGIN) == self.id:
            return  # our own batch: fan_out gave it to our members directly
        try:
            org, subject = self.names.parse(msg.subject)
            count = int(headers.get(H_COUNT, "0"))
            if not 0 < count <= _MAX_BATCH_EVENTS:
                raise BadMessage(f"header {H_COUNT} is {headers.get(H_COUNT)!r}")
            ids = decode_ids(headers.get(H_IDS, ""), count)
        except (BadMessage, ValueError) as exc:
            self._warn("backbone.nats.bad_message", "dropped %s: %s", msg.subject, exc)
            return
        holders = [j.member for j in self._members if interest in j.interests]
        heard = False
        if interest.queue and len(holders) > 1:
            self._turn += 1  # one member per event: take turns among this process's nodes
            k = self._turn % len(holders)
            holders = holders[k:] + holders[:k]
        for m in holders:
            taken = m.deliver_to(interest, subject, msg.data, count, ids)
            heard = heard or taken > 0 or (request and m.listens(org, subject))
            if interest.queue and taken:
                break
        if request and msg.reply:
            self._send(msg.reply, b"", "", {H_HEARD: "1" if heard else "0"})

    async def _on_ack(self, msg: Msg) -> None:
        ack = self._acks.get(msg.subject.rpartition(".")[2])
        if ack is None or ack.heard.done():
            return
        headers = msg.headers or {}
        if headers.get(_STATUS) == _NO_RESPONDERS:
            ack.heard.set_result(False)
        elif headers.get(H_HEARD) == "1":
            ack.heard.set_result(True)
        else:
            ack.refused = True

    async def _on_reply(self, msg: Msg) -> None:
        try:
            org, inbox = self.names.parse_reply(msg.subject)
            event = CloudEvent.FromString(msg.data)
        except Exception as exc:  # BadMessage, protobuf's DecodeError
            self._warn("backbone.nats.bad_message", "dropped %s: %s", msg.subject, exc)
            return
        node = node_of_inbox(inbox)
        for j in self._members:
            if j.member.node_id == node and j.member.deliver_reply(org, inbox, event):
                return

    async def _on_notice(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get(H_ORIGIN) == self.id:
            return  # notify told our members directly
        kind = self.names.kind_of_notice(msg.subject)
        try:
            if kind not in _KINDS:
                raise BadMessage(f"unknown notice kind {kind!r}")
            notice = Notice(
                kind,  # type: ignore[arg-type]  # checked against NoticeKind above
                text_of_header(headers.get(H_NODE, "")),
                text_of_header(headers.get(H_ORG, "")),
                text_of_header(headers.get(H_NAME, "")),
            )
        except BadMessage as exc:
            self._warn("backbone.nats.bad_message", "dropped %s: %s", msg.subject, exc)
            return
        for j in list(self._members):
            if j.member.node_id != notice.origin:
                j.member.on_notice(notice)

    # -- nats-py's callbacks --------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = _why(exc)
        self._warn("backbone.nats.error", "%s", _why(exc))

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        self.log.warning("backbone.nats.disconnected: lost %s, reconnecting", shown_url(self.url))
        self._fail_acks("the connection to NATS was lost")

    async def _on_reconnected(self) -> None:
        self.log.warning("backbone.nats.reconnected: %s", shown_url(self.url))
        self._dirty.set()  # confirms the replayed subscriptions (settle waits on it)

    def _fail_acks(self, why: str) -> None:
        for ack in self._acks.values():
            if not ack.heard.done():
                ack.heard.set_exception(_unreachable(why))
        # A failed future nobody awaits any more must not be reported as never retrieved.
        for ack in self._acks.values():
            ack.heard.add_done_callback(_consume)


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _unreachable(why: str) -> Unavailable:
    return Unavailable(
        f"the NATS backbone is unavailable: {why}",
        hint="retry; the node reconnects on its own (check NATS if it persists)",
    )


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def _quietly_close(nc: Client) -> None:
    try:
        await nc.close()
    except Exception as exc:  # closing a half-open client may raise anything of nats-py's
        logging.getLogger("lockgate.backbone").debug("closing NATS: %s", _why(exc))
