"""Webhooks: signed POSTs to a real aiohttp receiver on loopback; retries, Retry-After,
410 and max_deliveries dead-lettering through the broker's own machinery; the verify helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web

from lockgate.broker.api import DurableOptions, StoredEvent
from lockgate.clients._webhook import WebhookSignatureError, verify_webhook
from lockgate.gateways._web import start_site
from lockgate.gateways.webhook import WebhookDispatcher, WebhookSettings, sign
from tests.gateways.gw_kit import Local, accept_malformed, event, malformed_event, unique
from tests.support import eventually

SECRET = "s3cret"


@dataclass
class Receiver:
    url: str
    answers: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    """The answer by delivery attempt (200 when absent). By attempt, not by arrival, so that
    a duplicate delivery (at-least-once) gets the same answer as its original."""
    got: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        rec.got.append((time.monotonic(), dict(request.headers), body))
        rec.arrived.set()
        attempt = int(request.headers["X-Lockgate-Attempt"])
        status, headers = rec.answers.get(attempt, (200, {}))
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, port = await start_site(app, "127.0.0.1:0")
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


@pytest_asyncio.fixture
async def dispatcher(local: Local) -> AsyncIterator[WebhookDispatcher]:
    d = WebhookDispatcher(
        local.api, WebhookSettings(secret=SECRET, backoff=(0.2, 0.4), timeout=2.0)
    )
    await d.start()
    yield d
    await d.stop()


def attempts(rec: Receiver) -> set[str]:
    return {h["X-Lockgate-Attempt"] for _, h, _ in rec.got}


def first_times(rec: Receiver) -> dict[int, float]:
    """When each attempt first arrived."""
    out: dict[int, float] = {}
    for t, h, _ in rec.got:
        out.setdefault(int(h["X-Lockgate-Attempt"]), t)
    return out


async def make_durable(local: Local, url: str, **kw: object) -> tuple[str, str]:
    subject, durable = unique("wh."), unique("d")
    options = DurableOptions(endpoint_url=url, **kw)  # type: ignore[arg-type]
    await local.api.create_durable(None, durable, subject, options)
    return subject, durable


async def test_signed_binary_post_and_ack(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    subject, durable = await make_durable(local, receiver.url)
    ev = event(1, data='{"total": 7}')
    ev.attributes["traceparent"].ce_string = "00-aa-bb-01"
    out = await local.api.publish(None, subject, [ev])
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    _, headers, body = receiver.got[0]
    verify_webhook(SECRET, headers, body)
    assert body == b'{"total": 7}'
    assert headers["ce-id"] == ev.id and headers["ce-specversion"] == "1.0"
    assert headers["ce-traceparent"] == "00-aa-bb-01"
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Lockgate-Delivery"] == str(out.ids[0])
    assert headers["X-Lockgate-Attempt"] == "1" and headers["X-Lockgate-Durable"] == durable
    consumer = local.broker.consumers[("default", durable)]
    await eventually(lambda: not consumer.pending)


async def test_retries_back_off_then_ack(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (500, {}), 2: (503, {})}
    subject, durable = await make_durable(local, receiver.url)
    await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: "3" in attempts(receiver))
    times = first_times(receiver)
    assert times[2] - times[1] >= 0.18 and times[3] - times[2] >= 0.38
    consumer = local.broker.consumers[("default", durable)]
    await eventually(lambda: not consumer.pending)


async def test_429_honours_retry_after(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (429, {"Retry-After": "1"})}
    subject, _ = await make_durable(local, receiver.url)
    await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: "2" in attempts(receiver))
    times = first_times(receiver)
    assert times[2] - times[1] >= 0.95


async def test_410_dead_letters_at_once(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (410, {})}
    subject, durable = await make_durable(local, receiver.url, max_deliveries=5)
    out = await local.api.publish(None, subject, [event(1)])

    async def dead() -> list[object]:
        events, _ = await local.api.query(None, f"$dlq.{durable}")
        return list(events)

    dl = (await eventually(dead))[0]
    assert dl.event.attributes["lockgateoriginalid"].ce_string == str(out.ids[0])  # type: ignore[attr-defined]
    assert attempts(receiver) == {"1"}  # no retry after 410


async def test_max_deliveries_dead_letters(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {i: (500, {}) for i in range(1, 10)}
    subject, durable = await make_durable(local, receiver.url, max_deliveries=2)
    await local.api.publish(None, subject, [event(1)])

    async def dead() -> list[object]:
        events, _ = await local.api.query(None, f"$dlq.{durable}")
        return list(events)

    await eventually(dead)
    assert attempts(receiver) == {"1", "2"}


async def test_a_bound_stream_takes_precedence(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    subject, durable = await make_durable(local, receiver.url)
    sub = await local.api.subscribe(None, subject, durable=durable)
    await local.api.publish(None, subject, [event(1)])
    batch = await asyncio.wait_for(anext(aiter(sub)), 5)
    assert len({d.id for d in batch}) == 1 and receiver.got == []
    await sub.ack([batch[0].id])
    await sub.close()


def test_verify_webhook_rejects_bad_stale_and_missing() -> None:
    body = b'{"a":1}'
    now = int(time.time())
    good = {"X-Lockgate-Timestamp": str(now), "X-Lockgate-Signature": sign(SECRET, now, body)}
    verify_webhook(SECRET, good, body)
    verify_webhook(SECRET, {k.lower(): v for k, v in good.items()}, body)
    rotated = dict(good, **{"X-Lockgate-Signature": "v1=00ff, " + good["X-Lockgate-Signature"]})
    verify_webhook(SECRET, rotated, body)
    cases = [
        ("other", good, body, "BAD_SIGNATURE"),
        (SECRET, good, body + b" ", "BAD_SIGNATURE"),
        (SECRET, {"X-Lockgate-Timestamp": str(now)}, body, "MISSING_SIGNATURE"),
        (SECRET, dict(good, **{"X-Lockgate-Timestamp": "soon"}), body, "BAD_SIGNATURE"),
    ]
    for secret, headers, raw, reason in cases:
        with pytest.raises(WebhookSignatureError) as info:
            verify_webhook(secret, headers, raw)
        assert info.value.reason == reason and info.value.hint
    old = now - 600
    stale = {"X-Lockgate-Timestamp": str(old), "X-Lockgate-Signature": sign(SECRET, old, body)}
    with pytest.raises(WebhookSignatureError) as info:
        verify_webhook(SECRET, stale, body, now=now)
    assert info.value.reason == "STALE_SIGNATURE" and "600" in info.value.message
    verify_webhook(SECRET, stale, body, tolerance=900, now=now)


async def test_unencodable_event_is_dead_lettered_and_the_next_delivered(
    local: Local,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accept_malformed(monkeypatch)
    subject, durable = await make_durable(local, receiver.url)
    plain = event(2)
    del plain.attributes["datacontenttype"]  # no content type: none is invented
    plain.binary_data = b"\x01\x02"
    ids = (await local.api.publish(None, subject, [malformed_event(1), plain])).ids
    await eventually(lambda: len(receiver.got) >= 1)
    _, headers, body = receiver.got[0]
    assert headers["X-Lockgate-Delivery"] == str(ids[1]) and body == b"\x01\x02"
    assert "Content-Type" not in headers
    dead = await eventually(lambda: _dead(local, durable))
    assert [d.event.attributes["lockgateoriginalid"].ce_string for d in dead] == [str(ids[0])]
    assert [o.action for i, o in dispatcher.outcomes if i == ids[0]] == ["dead"]


async def _dead(local: Local, durable: str) -> list[StoredEvent]:
    events, _ = await local.api.query(None, f"$dlq.{durable}")
    return events
