"""The WebSocket gateway (aiohttp): ``/v1/ws`` speaks JSON frames.

Client frames (``ref`` is optional and echoed in the answer)::

    {"op": "subscribe", "pattern": "orders.>", "durable"?: "d1", "queue"?: "q",
     "start"?: "new" | "all" | "after:<id>" | RFC 3339, "max_in_flight"?: 100}
    {"op": "unsubscribe", "subscription": "<name>"}
    {"op": "publish", "subject": "orders.eu", "event": {CloudEvent JSON}}
    {"op": "publish", "subject": "orders.eu", "data": {...}, "type"?: "...", "source"?: "..."}
    {"op": "ack", "ids": ["<id>", ...]}
    {"op": "nack", "ids": ["<id>", ...], "delay"?: "5s"}
    {"op": "join", "conversation": "<id>", "last_n"?: 20, "since"?: RFC 3339}
    {"op": "leave", "conversation": "<id>"}
    {"op": "send", "conversation": "<id>", "text" | "data" (base64), "encryption"?: {...}}
    {"op": "typing", "conversation": "<id>", "typing": true | false}

Server frames::

    {"op": "ok", "ref", ...}        "subscription" (its name) or "ids"/"duplicates"
    {"op": "error", "ref", "reason", "message", "hint"}
    {"op": "event", "subscription", "id", "subject", "attempt", "event": {CloudEvent JSON}}
    {"op": "skipped", "subscription", "id", "subject", "reason", "message"}
    {"op": "message" | "user_joined" | "user_left" | "typing" | "presence" | "receipt" |
     "conversation", "conversation", ...}   (a joined room's chat frames, ``_chat``)

A stored event that has no CloudEvents JSON form is skipped (a ``skipped`` frame; a durable
subscription dead-letters it to ``$dlq.<durable>``), and the events behind it keep coming.

The server pings every ``heartbeat`` seconds (WebSocket ping frames) and closes a socket
whose pong does not come. A socket that cannot keep up (its send buffer over
``max_send_buffer`` bytes, or one send blocked for ``send_timeout``) is closed with 1013 and
the reason; an ephemeral subscription the broker cut off as a slow consumer closes it with
1008, and so does a socket whose credential was revoked or expired (or opened anonymously in
the dev mode, which ended), with or without subscriptions: within the 5 s a revocation takes.
A bad credential is refused at the upgrade with 401 problem+json. Either way the broker never
waits for a socket: its outboxes decouple them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from lockgate.broker.actor import enter
from lockgate.broker.api import BrokerAPI, CloudEvent, Delivery, Subscription
from lockgate.broker.errors import BrokerError, FailedPrecondition, InvalidArgument
from lockgate.gateways import _chat
from lockgate.gateways._cejson import JsonValue, event_from_json
from lockgate.gateways._ingest import shorthand_event
from lockgate.gateways._json import dumps, loads
from lockgate.gateways._report import UNENCODABLE, report_unencodable
from lockgate.gateways._web import (
    api_key,
    delivery_json,
    parse_duration_param,
    parse_id,
    parse_start,
)
from lockgate.gateways._ws_publish import PublishCoalescer
from lockgate.gateways.errors import InvalidParameter, MalformedJson

__all__ = ["WsSettings", "add_ws_route", "open_sockets", "ws_handler"]

CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013


@dataclass(frozen=True, slots=True)
class WsSettings:
    """``[gateways.ws]`` settings."""

    heartbeat: float = 20.0
    max_send_buffer: int = 4 << 20
    send_timeout: float = 10.0
    max_frame_bytes: int = 1 << 20
    max_subscriptions: int = 64


WS_API = web.AppKey("lockgate_ws_api", BrokerAPI)
WS_SETTINGS = web.AppKey("lockgate_ws_settings", WsSettings)


_TEXT_CACHE: collections.OrderedDict[tuple[int, int, str], str] = collections.OrderedDict()
_TEXT_CACHE_SIZE = 8192


def _event_text(d: Delivery) -> str:
    """The delivery's JSON members without the opening brace, encoded once for every socket
    that gets it (fan-out: one event to many sockets costs one encoding)."""
    key = (d.id, d.attempt or 1, d.subject)
    text = _TEXT_CACHE.get(key)
    if text is None:
        text = dumps(delivery_json(d))[1:]
        _TEXT_CACHE[key] = text
        if len(_TEXT_CACHE) > _TEXT_CACHE_SIZE:
            _TEXT_CACHE.popitem(last=False)
    return text


class _SlowSocket(Exception):
    pass


class _Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        api: BrokerAPI,
        key: str | None,
        settings: WsSettings,
    ) -> None:
        self.ws = ws
        self.request = request
        self.api = api
        self.key = key
        self.settings = settings
        self.subs: dict[str, Subscription] = {}
        self.pumps: dict[str, asyncio.Task[None]] = {}
        self.pending: dict[int, Subscription] = {}
        self.rooms: dict[str, tuple[Subscription, asyncio.Task[None]]] = {}
        """Joined conversations: their ``$conv.<id>.>`` subscription and its pump."""
        self.closing = False
        self.ended = False
        self.publishes = PublishCoalescer(api, key, self._answer)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.publishes.drain()
                    await self._error(None, MalformedJson("binary frames are not accepted"))
        finally:
            try:
                await self.publishes.drain()  # what the socket sent before it closed
            finally:
                await self.publishes.close()
                await self._shutdown()

    async def close_when_revoked(self) -> None:
        """Closes the socket (1008) once its credential is revoked or expires, with or
        without subscriptions (theirs end the same way, each with an error frame)."""
        await self._end(await self.api.until_revoked(self.key), CLOSE_POLICY)

    async def _end(self, err: BrokerError, code: int) -> None:
        """One error frame and a close, once: a revocation reaches the socket's watcher and
        each of its subscriptions at the same moment."""
        if self.ended:
            return
        self.ended = True
        await self._error(None, err)
        await self._close(code, f"{err.reason}: {err.message}")

    async def _shutdown(self) -> None:
        for t in self.pumps.values():
            t.cancel()
        await asyncio.gather(*self.pumps.values(), return_exceptions=True)
        for sub in self.subs.values():
            with contextlib.suppress(BrokerError):
                await sub.close()
        self.subs.clear()
        for cid in list(self.rooms):
            with contextlib.suppress(BrokerError):
                await self._leave_room(cid)

    async def _send(self, value: object) -> None:
        """Sends ``value`` (a str is sent as it is, anything else as JSON)."""
        transport = self.request.transport
        if transport is not None and transport.get_write_buffer_size() > (
            self.settings.max_send_buffer
        ):
            raise _SlowSocket(
                f"the socket's send buffer is over {self.settings.max_send_buffer} bytes"
            )
        try:
            text = value if isinstance(value, str) else dumps(value)
            await asyncio.wait_for(self.ws.send_str(text), self.settings.send_timeout)
        except TimeoutError:
            raise _SlowSocket(
                f"a send blocked for more than {self.settings.send_timeout:g} s"
            ) from None

    async def _close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 2.0)
        except (TimeoutError, ConnectionError):
            if self.request.transport is not None:
                self.request.transport.close()  # flushes what is queued, close frame included

    async def _error(self, ref: JsonValue, err: BrokerError) -> None:
        frame: dict[str, JsonValue] = {
            "op": "error",
            "reason": err.reason,
            "message": err.message,
            "hint": err.hint,
        }
        if ref is not None:
            frame["ref"] = ref
        with contextlib.suppress(_SlowSocket, ConnectionError):
            await self._send(frame)

    async def _frame(self, text: str) -> None:
        ref: JsonValue = None
        try:
            doc = loads(text)
            if not isinstance(doc, dict):
                raise MalformedJson("a frame must be a JSON object")
            ref = doc.get("ref")
            op = doc.get("op")
            if op == "publish":
                await self.publishes.add(ref, *_publish_event(doc), size=len(text))
                return
            await self.publishes.drain()  # the publishes before this frame answer first
            if op == "subscribe":
                answer = await self._subscribe(doc)
            elif op == "unsubscribe":
                answer = await self._unsubscribe(doc)
            elif op in ("ack", "nack"):
                answer = await self._ack(doc, op)
            elif op in ("join", "leave", "send", "typing"):
                answer = await self._chat(doc, op)
            else:
                raise InvalidParameter(
                    "op",
                    str(op),
                    "subscribe, unsubscribe, publish, ack, nack, join, leave, send or typing",
                )
        except BrokerError as err:
            await self.publishes.drain()
            await self._error(ref, err)
            return
        await self._answer(ref, answer)

    async def _answer(self, ref: JsonValue, answer: dict[str, JsonValue] | BrokerError) -> None:
        if isinstance(answer, BrokerError):
            await self._error(ref, answer)
            return
        answer["op"] = "ok"
        if ref is not None:
            answer["ref"] = ref
        with contextlib.suppress(_SlowSocket, ConnectionError):
            await self._send(answer)

    async def _chat(self, doc: dict[str, object], op: str) -> dict[str, JsonValue]:
        api, key = self.api, self.key
        if op == "send":
            sent = await api.conversation(key, "SendMessage", _chat.send_request(doc))
            assert isinstance(sent, _chat.pb.SendMessageResponse)
            return {"id": str(sent.id), "duplicate": sent.duplicate}
        if op == "typing":
            await api.conversation(key, "SetTyping", _chat.typing_request(doc))
            return {}
        if op == "leave":
            req = _chat.leave_request(doc)
            await api.conversation(key, "LeaveConversation", req)
            await self._leave_room(req.conversation_id)
            return {"conversation": req.conversation_id}
        join = _chat.join_request(doc)
        cid = join.conversation_id
        if cid not in self.rooms:
            self._room_budget()
        joined = await api.conversation(key, "JoinConversation", join)
        assert isinstance(joined, _chat.pb.JoinConversationResponse)
        if cid not in self.rooms:
            # Subscribed after the join, so the history answer and the live frames meet: a
            # message stored in between may come twice (once in each), never not at all.
            sub = await api.subscribe(key, f"$conv.{cid}.>")
            self.rooms[cid] = (sub, asyncio.create_task(self._room_pump(cid, sub)))
        return {
            "conversation": _chat.conversation_json(joined.conversation),
            "messages": [_chat.message_json(m) for m in joined.messages],
        }

    def _room_budget(self) -> None:
        if len(self.subs) + len(self.rooms) >= self.settings.max_subscriptions:
            raise InvalidArgument(
                f"a socket holds at most {self.settings.max_subscriptions} subscriptions and rooms",
                reason="TOO_MANY_SUBSCRIPTIONS",
                hint="leave or unsubscribe first, or open another socket",
            )

    async def _leave_room(self, cid: str) -> None:
        room = self.rooms.pop(cid, None)
        if room is None:
            return
        sub, task = room
        # Closed first: its pump then ends by itself even when the cancel is lost (Python
        # 3.11's wait_for swallows a cancel that meets a finished send).
        await sub.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _room_pump(self, cid: str, sub: Subscription) -> None:
        async with self._pump_ends():
            async for batch in sub:
                for d in batch:
                    try:
                        frame = _chat.chat_frame(d)
                    except (ValueError, KeyError, MalformedJson) as exc:
                        report_unencodable("ws", d.id, d.subject, exc)
                        continue
                    await self._send(frame)

    @contextlib.asynccontextmanager
    async def _pump_ends(self) -> AsyncIterator[None]:
        """How a pump (a subscription's or a room's) ends the socket: a slow socket or a lost
        connection closes it for the client to retry; a broker error is sent first, then
        closes it as policy (1008) for a slow consumer cut off or a revoked key (or the end
        of the dev mode), else for a retry."""
        try:
            yield
        except _SlowSocket as exc:
            await self._close(CLOSE_TRY_AGAIN, f"slow consumer: {exc}")
        except BrokerError as err:
            code = (
                CLOSE_POLICY
                if err.reason == "SLOW_CONSUMER" or err.code.name == "UNAUTHENTICATED"
                else CLOSE_TRY_AGAIN
            )
            await self._end(err, code)
        except ConnectionError:
            await self._close(CLOSE_TRY_AGAIN, "connection lost")

    async def _subscribe(self, doc: dict[str, object]) -> dict[str, JsonValue]:
        if len(self.subs) + len(self.rooms) >= self.settings.max_subscriptions:
            raise InvalidArgument(
                f"a socket holds at most {self.settings.max_subscriptions} subscriptions",
                reason="TOO_MANY_SUBSCRIPTIONS",
                hint="unsubscribe first, or open another socket",
            )
        pattern, durable, queue = (str(doc.get(k) or "") for k in ("pattern", "durable", "queue"))
        mif = doc.get("max_in_flight") or 0
        if not isinstance(mif, int) or mif < 0:
            raise InvalidParameter("max_in_flight", str(mif), "a non-negative integer")
        sub = await self.api.subscribe(
            self.key,
            pattern,
            durable=durable,
            queue=queue,
            start=parse_start(doc.get("start")),
            max_in_flight=mif,
        )
        name = sub.name or durable or uuid.uuid4().hex[:8]
        if name in self.subs:
            await sub.close()
            raise FailedPrecondition(
                f"this socket already subscribes to {name!r}", reason="ALREADY_SUBSCRIBED"
            )
        self.subs[name] = sub
        self.pumps[name] = asyncio.create_task(self._pump(name, sub, durable))
        return {"subscription": name}

    async def _unsubscribe(self, doc: dict[str, object]) -> dict[str, JsonValue]:
        name = str(doc.get("subscription") or "")
        sub = self.subs.pop(name, None)
        if sub is None:
            raise InvalidParameter("subscription", name, "the name a subscribe answered")
        task = self.pumps.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sub.close()
        self.pending = {i: s for i, s in self.pending.items() if s is not sub}
        return {"subscription": name}

    async def _ack(self, doc: dict[str, object], op: str) -> dict[str, JsonValue]:
        raw = doc.get("ids")
        if not isinstance(raw, list):
            raise InvalidParameter("ids", str(raw), "a list of event ids")
        ids = [parse_id("ids", i) for i in raw]
        unknown = [i for i in ids if i not in self.pending]
        if unknown:
            raise FailedPrecondition(
                f"id {unknown[0]} is not pending on this socket",
                reason="NOT_PENDING",
                hint="ack only ids delivered on this socket by a durable subscription",
            )
        groups: dict[int, tuple[Subscription, list[int]]] = {}
        for i in ids:
            sub = self.pending[i]
            groups.setdefault(id(sub), (sub, []))[1].append(i)
        delay = parse_duration_param("delay", doc.get("delay"), 0.0, 86400.0)
        for sub, group in groups.values():
            if op == "ack":
                await sub.ack(group)
            else:
                await sub.nack(group, delay)
            for i in group:
                self.pending.pop(i, None)
        return {"count": len(ids)}

    async def _skip(self, name: str, durable: str, d: Delivery, exc: Exception) -> None:
        """Skips a delivery that cannot be encoded: reported, dead-lettered when durable
        (so it is not redelivered forever), and announced to the client."""
        report_unencodable("ws", d.id, d.subject, exc)
        if durable:
            with contextlib.suppress(BrokerError):  # no longer pending: nothing to settle
                await self.api.acknowledge(self.key, durable, [], [], term_ids=[d.id])
        await self._send(
            {
                "op": "skipped",
                "subscription": name,
                "id": str(d.id),
                "subject": d.subject,
                "reason": "INVALID_EVENT",
                "message": f"the stored event cannot be encoded as CloudEvents JSON: {exc}",
            }
        )

    async def _pump(self, name: str, sub: Subscription, durable: str) -> None:
        async with self._pump_ends():
            async for batch in sub:
                head = '{"op":"event","subscription":' + dumps(name) + ","
                for d in batch:
                    try:
                        text = _event_text(d)
                    except UNENCODABLE as exc:
                        await self._skip(name, durable, d, exc)
                        continue
                    if sub.durable:
                        self.pending[d.id] = sub
                    await self._send(head + text)


class _Open:
    sockets = 0
    """WebSocket sessions open in this process (the connections gauge reads it)."""


def _publish_event(doc: dict[str, object]) -> tuple[str, CloudEvent]:
    """The subject and event of a publish frame; raises for a frame that has none."""
    subject = doc.get("subject")
    if not isinstance(subject, str):
        raise InvalidParameter("subject", str(subject), "a subject such as orders.eu")
    if "event" in doc:
        return subject, event_from_json(doc["event"])
    if "data" in doc:
        return subject, shorthand_event(doc, uuid.uuid4().hex, "/lockgate/ws", "lockgate.message")
    raise InvalidParameter("event", "(none)", 'an "event" (CloudEvent JSON) or "data"')


def open_sockets() -> int:
    """WebSocket sessions open in this process, on every listener."""
    return _Open.sockets


async def ws_handler(request: web.Request) -> web.StreamResponse:
    api = request.app[WS_API]
    settings = request.app[WS_SETTINGS]
    enter("ws", request.remote or "")  # the socket's audit records come from here
    try:
        key = api_key(request.headers) or request.query.get("api_key") or None
        # A bad credential is refused at the upgrade (401 problem+json), not at the first
        # operation: a socket is never opened for a caller who cannot use it.
        await api.check_credential(key)
    except BrokerError as err:
        from lockgate.gateways._web import problem

        return problem(err)
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat, max_msg_size=settings.max_frame_bytes)
    await ws.prepare(request)
    conn = _Connection(ws, request, api, key, settings)
    watcher = asyncio.create_task(conn.close_when_revoked())
    _Open.sockets += 1
    try:
        await conn.run()
    finally:
        _Open.sockets -= 1
        watcher.cancel()
    return ws


def add_ws_route(
    app: web.Application, api: BrokerAPI, settings: WsSettings | None = None, path: str = "/v1/ws"
) -> None:
    """Adds the WebSocket endpoint to ``app`` (the HTTP gateway's or a separate one)."""
    app[WS_API] = api
    app[WS_SETTINGS] = settings or WsSettings()
    app.router.add_get(path, ws_handler)
