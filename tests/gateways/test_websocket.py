"""The WebSocket gateway: subscribe/publish/ack frames, heartbeats, slow sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from lockgate.gateways._ws_publish import MAX_PENDING_BYTES, PublishCoalescer
from lockgate.gateways.websocket import WsSettings
from tests.gateways.gw_kit import (
    Local,
    accept_malformed,
    count_events,
    event,
    local_broker,
    malformed_event,
    unique,
)


async def frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> dict[str, object]:
    msg = await ws.receive(timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_subscribe_publish_sub_second(local: Local) -> None:
    subject = unique("ws.")
    async with local.session.ws_connect(f"{local.url}/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "pattern": f"{subject}.>", "ref": 1})
        ok = await frame(ws)
        assert ok["op"] == "ok" and ok["ref"] == 1 and ok["subscription"]
        started = time.monotonic()
        await ws.send_json({"op": "publish", "subject": f"{subject}.a", "data": {"x": 1}, "ref": 2})
        got = [await frame(ws), await frame(ws)]
        elapsed = time.monotonic() - started
        ev = next(f for f in got if f["op"] == "event")
        ack = next(f for f in got if f["op"] == "ok")
        assert ack["ref"] == 2 and ack["ids"] == [ev["id"]]
        assert ev["subject"] == f"{subject}.a" and ev["attempt"] == 1
        assert ev["event"]["data"] == {"x": 1}  # type: ignore[index]
        assert elapsed < 0.5
        # A CloudEvent published elsewhere arrives too, in the JSON format.
        await local.api.publish(None, f"{subject}.b", [event(1, data='{"y": 2}')])
        ev = await frame(ws)
        assert ev["event"]["data"] == {"y": 2} and ev["event"]["specversion"] == "1.0"  # type: ignore[index]


async def test_durable_ack_and_nack(local: Local) -> None:
    subject, durable = unique("wsd."), unique("d")
    async with local.session.ws_connect(f"{local.url}/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "pattern": subject, "durable": durable})
        assert (await frame(ws))["op"] == "ok"
        await local.api.publish(None, subject, [event(1), event(2)])
        first, second = await frame(ws), await frame(ws)
        await ws.send_json({"op": "ack", "ids": [first["id"]], "ref": "a"})
        assert (await frame(ws))["op"] == "ok"
        await ws.send_json({"op": "nack", "ids": [second["id"]], "delay": "0s"})
        frames = [await frame(ws), await frame(ws)]
        again = next(f for f in frames if f["op"] == "event")
        assert again["id"] == second["id"] and again["attempt"] == 2
        await ws.send_json({"op": "ack", "ids": [second["id"]]})
        assert (await frame(ws))["op"] == "ok"
        await ws.send_json({"op": "ack", "ids": [second["id"]]})
        err = await frame(ws)
        assert err["op"] == "error" and err["reason"] == "NOT_PENDING"
    consumer = local.broker.consumers[("default", durable)]
    assert consumer.pending == {}


async def test_bad_frames_answer_errors_and_keep_the_socket(local: Local) -> None:
    async with local.session.ws_connect(f"{local.url}/v1/ws") as ws:
        await ws.send_str("{not json")
        assert (await frame(ws))["reason"] == "MALFORMED_JSON"
        await ws.send_json({"op": "dance"})
        assert (await frame(ws))["reason"] == "INVALID_PARAMETER"
        await ws.send_json({"op": "publish", "subject": "bad..s", "data": 1, "ref": 9})
        err = await frame(ws)
        assert err["reason"] == "INVALID_SUBJECT" and err["ref"] == 9
        await ws.send_json({"op": "publish", "subject": "a.b", "event": {"id": "1"}})
        assert (await frame(ws))["reason"] == "MISSING_ATTRIBUTE"
        await ws.send_json({"op": "subscribe", "pattern": "a..b"})
        assert (await frame(ws))["op"] == "error"
        await ws.send_json({"op": "ack", "ids": ["123"]})
        assert (await frame(ws))["reason"] == "NOT_PENDING"
        await ws.send_json({"op": "publish", "subject": "a.b", "data": 1})
        assert (await frame(ws))["op"] == "ok"
    assert await count_events(local.api) == 1


async def test_publishes_sent_together_are_answered_each_in_order(local: Local) -> None:
    """Publishes a socket sends without waiting go to the broker together (a run of one
    subject is one publish call) and each gets its own answer, in the order sent: refused
    ones (a bad subject, a bad event) among them, and a subscribe sent behind them is
    answered after them."""
    subject, other = unique("wsc."), unique("wsc.")
    frames: list[dict[str, object]] = []
    for i in range(60):
        frames.append({"op": "publish", "subject": subject, "data": {"i": i}, "ref": i})
    frames[10] = {"op": "publish", "subject": "bad..s", "data": 1, "ref": 10}
    frames[20] = {"op": "publish", "subject": subject, "event": {"id": "x"}, "ref": 20}
    frames[30] = {"op": "publish", "subject": other, "data": {"i": 30}, "ref": 30}
    frames.append({"op": "subscribe", "pattern": subject, "ref": "sub"})
    calls: list[int] = []
    publish = local.api.publish

    async def counting(key: str | None, subj: str, events: list[object]) -> object:
        calls.append(len(events))
        return await publish(key, subj, events)  # type: ignore[arg-type]

    local.api.publish = counting  # type: ignore[method-assign,assignment]
    try:
        async with local.session.ws_connect(f"{local.url}/v1/ws") as ws:
            for f in frames:
                await ws.send_str(json.dumps(f))
            answers = [await frame(ws) for _ in frames]
    finally:
        local.api.publish = publish  # type: ignore[method-assign]
    assert [a.get("ref") for a in answers] == [f["ref"] for f in frames]
    refused = {a["ref"]: a["reason"] for a in answers if a["op"] == "error"}
    assert refused == {10: "INVALID_SUBJECT", 20: "MISSING_ATTRIBUTE"}
    assert all(a["op"] == "ok" for a in answers if a["ref"] not in refused)
    stored, _ = await local.api.query(None, subject, limit=100)
    acked = [a["ids"] for a in answers if a["op"] == "ok" and a["ref"] not in (30, "sub")]
    assert [[str(e.id)] for e in stored] == acked
    assert len(calls) < 58  # coalesced: fewer broker calls than publishes


async def test_heartbeat_pings(local: Local) -> None:
    async with local.session.ws_connect(f"{local.url}/v1/ws", autoping=False) as ws:
        msg = await ws.receive(3.0)
        assert msg.type == aiohttp.WSMsgType.PING
        await ws.pong(msg.data)


async def _raw_ws(port: int, first: dict[str, object]) -> tuple[asyncio.StreamReader, object]:
    """A bare WebSocket client on a socket with a small receive buffer, so that a client that
    stops reading is really slow (aiohttp's client would keep draining the socket)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps(first).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await writer.drain()
    return reader, writer


async def _read_small_frame(reader: asyncio.StreamReader) -> dict[str, object]:
    """One unmasked text frame of under 126 bytes from the server, as JSON."""
    head = await asyncio.wait_for(reader.readexactly(2), 10)
    assert head[0] == 0x81 and head[1] < 126, head
    return json.loads(await reader.readexactly(head[1]))  # type: ignore[no-any-return]


async def test_slow_socket_is_dropped_and_the_broker_goes_on(tmp_path: Path) -> None:
    settings = WsSettings(heartbeat=30, max_send_buffer=64 << 10, send_timeout=0.5)
    async with local_broker(tmp_path, ws=settings) as env:
        subject = unique("slow.")
        port = int(env.url.rsplit(":", 1)[1])
        reader, writer = await _raw_ws(port, {"op": "subscribe", "pattern": subject})
        assert (await _read_small_frame(reader))["op"] == "ok"  # subscribed
        # Stop reading; publish far more than the kernel and the send buffer hold.
        big = '{"pad": "' + "x" * 8000 + '"}'
        started = time.monotonic()
        for i in range(100):  # 8 MB
            out = await env.api.publish(None, subject, [event(i, data=big) for _ in range(10)])
            assert not out.errors
        assert time.monotonic() - started < 10  # the broker never waited for the socket
        # The subject of the test: a send stays blocked for send_timeout (0.5 s) while this
        # client does not read, and the server gives up on the socket. Nothing outside the
        # socket shows that moment (the subscription lives until the socket closes), and
        # reading earlier would unblock the send.
        await asyncio.sleep(1.0)
        # Its close frame comes last, after what it had queued; then the server hangs up.
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()  # type: ignore[attr-defined]
        assert len(data) < 100 * 10 * 8000
        tail = data[-300:]
        at = tail.rfind(b"\x88")
        assert at >= 0, tail[-40:]
        code = int.from_bytes(tail[at + 2 : at + 4], "big")
        assert code in (1008, 1013)
        assert b"slow consumer" in tail[at:]
        # And the broker still serves everyone else.
        async with env.session.ws_connect(f"{env.url}/v1/ws") as ws2:
            await ws2.send_json({"op": "publish", "subject": subject, "data": 1})
            assert (await frame(ws2))["op"] == "ok"


async def test_unencodable_event_is_skipped_not_silencing(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription announces the skipped event and goes on with the next one; a
    durable one dead-letters it (it is not redelivered)."""
    accept_malformed(monkeypatch)
    subject, durable = unique("wsbad."), unique("d")
    async with local.session.ws_connect(f"{local.url}/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "pattern": subject})
        await ws.send_json({"op": "subscribe", "pattern": subject, "durable": durable})
        assert (await frame(ws))["op"] == "ok" and (await frame(ws))["op"] == "ok"
        out = await local.api.publish(None, subject, [malformed_event(1), event(2)])
        bad, good = (str(i) for i in out.ids)
        frames = [await frame(ws) for _ in range(4)]
        skipped = [f for f in frames if f["op"] == "skipped"]
        events = [f for f in frames if f["op"] == "event"]
        assert [f["id"] for f in skipped] == [bad, bad] and skipped[0]["reason"] == "INVALID_EVENT"
        assert [f["id"] for f in events] == [good, good]
    dead, _ = await local.api.query(None, f"$dlq.{durable}")
    assert [d.event.attributes["lockgateoriginalid"].ce_string for d in dead] == [bad]


async def test_revoking_a_key_closes_its_sockets(local: Local) -> None:
    """A socket subscribed with a key that is then revoked gets an UNAUTHENTICATED error frame
    and a policy close within the documented 5 s, idle; another key's socket goes on."""
    from lockgate.broker.auth import create_key

    doomed, record = await create_key(local.broker.store, "default", "doomed", ["admin"])
    kept, _ = await create_key(local.broker.store, "default", "kept", ["admin"])
    subject = unique("wsr.")
    url = f"{local.url}/v1/ws"
    async with (
        local.session.ws_connect(url, headers={"Authorization": f"Bearer {doomed}"}) as ws,
        local.session.ws_connect(url, headers={"Authorization": f"Bearer {kept}"}) as other,
    ):
        for sock in (ws, other):
            await sock.send_json({"op": "subscribe", "pattern": f"{subject}.>"})
            assert (await frame(sock))["op"] == "ok"
        assert await local.broker.store.revoke_key(record.key_id)
        err = await frame(ws, timeout=15)
        assert err["op"] == "error" and err["reason"] == "CREDENTIAL_REVOKED", err
        assert "revoked" in str(err["message"])
        closed = await ws.receive(5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1008, closed
        await other.send_json({"op": "publish", "subject": f"{subject}.a", "data": {}, "ref": 1})
        got = [await frame(other), await frame(other)]
        assert {f["op"] for f in got} == {"ok", "event"}, got


async def _upgrade_refused(local: Local, headers: dict[str, str], reason: str) -> None:
    """The upgrade request itself answers 401 problem+json with ``reason``: no socket opens."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        **headers,
    }
    async with local.session.get(f"{local.url}/v1/ws", headers=upgrade) as resp:
        assert resp.status == 401, await resp.text()
        assert resp.content_type == "application/problem+json"
        body = json.loads(await resp.text())
        assert body["reason"] == reason, body
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        async with local.session.ws_connect(f"{local.url}/v1/ws", headers=headers):
            pass
    assert exc.value.status == 401


async def test_a_bad_credential_is_refused_at_the_upgrade(local: Local) -> None:
    from lockgate.broker.auth import create_key

    _, revoked = await create_key(local.broker.store, "default", "gone", ["admin"])
    assert await local.broker.store.revoke_key(revoked.key_id)
    expired, _ = await create_key(local.broker.store, "default", "old", [], expires_ms=1)
    good, _ = await create_key(local.broker.store, "default", "ok", [])
    local.auth.dev_mode = False
    try:
        await _upgrade_refused(local, {}, "UNAUTHENTICATED")
        await _upgrade_refused(local, {"Authorization": "Bearer lg_nope_nope"}, "UNAUTHENTICATED")
        await _upgrade_refused(local, {"Authorization": "Bearer a.b.c"}, "TOKEN_INVALID")
        await _upgrade_refused(local, {"Authorization": f"Bearer {expired}"}, "CREDENTIAL_EXPIRED")
        gone = f"lg_{revoked.key_id}_x"
        await _upgrade_refused(local, {"Authorization": f"Bearer {gone}"}, "UNAUTHENTICATED")
        # A good key opens the socket (in the header or the query).
        async with local.session.ws_connect(f"{local.url}/v1/ws?api_key={good}") as ws:
            await ws.send_json({"op": "publish", "subject": unique("wsok."), "data": {}})
            assert (await frame(ws))["op"] == "ok"
    finally:
        local.auth.dev_mode = True


@pytest.mark.parametrize("how", ["revoked", "expired"])
async def test_a_socket_without_subscriptions_closes_when_its_key_ends(
    local: Local, how: str
) -> None:
    """Not only subscriptions: an idle socket that only publishes is closed too (1008), with
    an error frame, when its key is revoked or reaches its expiry."""
    from lockgate.broker.auth import create_key

    expires = int((time.time() + 2) * 1000) if how == "expired" else 0
    key, record = await create_key(
        local.broker.store, "default", "idle", ["admin"], expires_ms=expires
    )
    url = f"{local.url}/v1/ws"
    async with local.session.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send_json({"op": "publish", "subject": unique("wsi."), "data": {}, "ref": 1})
        assert (await frame(ws))["op"] == "ok"
        if how == "revoked":
            assert await local.broker.store.revoke_key(record.key_id)
        err = await frame(ws, timeout=15)
        want = "CREDENTIAL_REVOKED" if how == "revoked" else "CREDENTIAL_EXPIRED"
        assert err["op"] == "error" and err["reason"] == want, err
        closed = await ws.receive(5)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1008, closed


async def test_a_socket_queues_publishes_up_to_a_byte_bound(local: Local) -> None:
    """While the broker is busy with a socket's publishes, its reader queues the next ones
    only up to MAX_PENDING_BYTES of frames (then reads nothing), not MAX_PENDING frames of
    up to a MiB each; once the broker answers, every publish is answered in order."""
    subject, half = unique("wsb."), MAX_PENDING_BYTES // 2
    gate, entered = asyncio.Event(), asyncio.Event()
    publish = local.api.publish

    async def gated(key: str | None, subj: str, events: list[object]) -> object:
        entered.set()
        await gate.wait()
        return await publish(key, subj, events)  # type: ignore[arg-type]

    answers: list[object] = []

    async def answer(ref: object, result: object) -> None:
        answers.append(ref)

    local.api.publish = gated  # type: ignore[method-assign,assignment]
    coalescer = PublishCoalescer(local.api, None, answer)  # type: ignore[arg-type]
    try:
        await coalescer.add(0, subject, event(0), size=half)
        await entered.wait()  # the first is with the broker; the queue is empty again
        await coalescer.add(1, subject, event(1), size=half)
        await coalescer.add(2, subject, event(2), size=half)  # exactly at the bound
        third = asyncio.create_task(coalescer.add(3, subject, event(3), size=1))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not third.done()  # over the bound: waits for the broker
        gate.set()
        await asyncio.wait_for(third, 5)
        await asyncio.wait_for(coalescer.drain(), 5)
    finally:
        local.api.publish = publish  # type: ignore[method-assign]
        await coalescer.close()
    assert answers == [0, 1, 2, 3]
