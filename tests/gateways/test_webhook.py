"""Webhooks: signed POSTs to a real aiohttp receiver on loopback; retries, Retry-After,
410 and max_deliveries dead-lettering through the broker's own machinery; the Standard
Webhooks signature over the structured CloudEvent (tampering, another durable's secret,
rotation); redirects not followed; the connect-time address check (DNS rebinding)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from lockgate.broker.api import Delivery, DurableOptions, StoredEvent
from lockgate.clients._webhook import WebhookSignatureError, sign_webhook, verify_webhook
from lockgate.gateways._site import start_site
from lockgate.gateways.webhook import (
    WebhookDispatcher,
    WebhookSender,
    WebhookSettings,
)
from tests.gateways.gw_kit import Local, accept_malformed, event, malformed_event, unique
from tests.support import eventually


@dataclass
class Receiver:
    url: str
    port: int = 0
    answers: dict[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    """The answer by delivery attempt (200 when absent). By attempt, not by arrival, so that
    a duplicate delivery (at-least-once) gets the same answer as its original."""
    got: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


def doc(body: bytes) -> dict[str, object]:
    out = json.loads(body)
    assert isinstance(out, dict)
    return out


def attempt_of(body: bytes) -> int:
    return int(doc(body)["lockgateattempt"])  # type: ignore[call-overload]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        rec.got.append((time.monotonic(), dict(request.headers), body))
        rec.arrived.set()
        status, headers = rec.answers.get(attempt_of(body), (200, {}))
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, port = await start_site(app, "127.0.0.1:0")
    rec.url, rec.port = f"http://127.0.0.1:{port}/hook", port
    yield rec
    await runner.cleanup()


@pytest_asyncio.fixture
async def dispatcher(local: Local) -> AsyncIterator[WebhookDispatcher]:
    # The receivers are on loopback: the test's broker and dispatcher allow private addresses.
    settings = WebhookSettings(backoff=(0.2, 0.4), timeout=2.0, allow_private=True)
    d = WebhookDispatcher(local.api, settings)
    await d.start()
    yield d
    await d.stop()


def attempts(rec: Receiver) -> set[int]:
    return {attempt_of(b) for _, _, b in rec.got}


def first_times(rec: Receiver) -> dict[int, float]:
    """When each attempt first arrived."""
    out: dict[int, float] = {}
    for t, _, b in rec.got:
        out.setdefault(attempt_of(b), t)
    return out


async def make_durable(local: Local, url: str, **kw: object) -> tuple[str, str, str]:
    subject, durable = unique("wh."), unique("d")
    options = DurableOptions(endpoint_url=url, **kw)  # type: ignore[arg-type]
    view = await local.api.create_durable(None, durable, subject, options)
    return subject, durable, view.webhook_secret


async def test_signed_structured_post_and_ack(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    subject, durable, secret = await make_durable(local, receiver.url)
    assert secret.startswith("whsec_")
    # Shown once: creating it again (idempotent) does not show it.
    again = await local.api.create_durable(
        None, durable, subject, DurableOptions(endpoint_url=receiver.url)
    )
    assert again.webhook_secret == ""
    ev = event(1, data='{"total": 7}')
    ev.attributes["traceparent"].ce_string = "00-aa-bb-01"
    out = await local.api.publish(None, subject, [ev])
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    _, headers, body = receiver.got[0]
    verify_webhook(secret, headers, body)
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers["webhook-id"] == str(out.ids[0])
    got = doc(body)
    assert (got["id"], got["type"], got["specversion"]) == (ev.id, ev.type, "1.0")
    assert got["data"] == {"total": 7} and got["traceparent"] == "00-aa-bb-01"
    assert (got["lockgatesubject"], got["lockgateorg"], got["lockgatedurable"]) == (
        subject,
        "default",
        durable,
    )
    assert (got["lockgatedeliveryid"], got["lockgateattempt"]) == (str(out.ids[0]), 1)
    # Another durable's secret (another org's, say) does not verify it.
    _, _, other = await make_durable(local, receiver.url)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(other, headers, body)
    consumer = local.broker.consumers[("default", durable)]
    await eventually(lambda: not consumer.pending)


async def test_a_rotated_secret_signs_beside_the_old_one_for_its_grace(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    subject, durable, old = await make_durable(local, receiver.url)
    new = await local.broker.durables.rotate_webhook_secret("default", durable, 3600)
    assert new.startswith("whsec_") and new != old
    await local.api.publish(None, subject, [event(1)])
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    _, headers, body = receiver.got[0]
    assert len(headers["webhook-signature"].split()) == 2
    verify_webhook(old, headers, body)
    verify_webhook(new, headers, body)
    newer = await local.broker.durables.rotate_webhook_secret("default", durable, 0)
    receiver.arrived.clear()
    await local.api.publish(None, subject, [event(2)])
    await eventually(lambda: len(receiver.got) >= 2)
    _, headers, body = receiver.got[1]
    verify_webhook(newer, headers, body)
    # The first one's grace ran to the second rotation, the second's ended at once.
    assert len(headers["webhook-signature"].split()) == 2
    with pytest.raises(WebhookSignatureError):
        verify_webhook(new, headers, body)


async def test_retries_back_off_then_ack(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (500, {}), 2: (503, {})}
    subject, durable, _ = await make_durable(local, receiver.url)
    await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: 3 in attempts(receiver))
    times = first_times(receiver)
    assert times[2] - times[1] >= 0.18 and times[3] - times[2] >= 0.38
    consumer = local.broker.consumers[("default", durable)]
    await eventually(lambda: not consumer.pending)


async def test_429_honours_retry_after(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (429, {"Retry-After": "1"})}
    subject, _, _ = await make_durable(local, receiver.url)
    await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: 2 in attempts(receiver))
    times = first_times(receiver)
    assert times[2] - times[1] >= 0.95


async def test_a_redirect_is_not_followed(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    elsewhere = receiver.url.replace("/hook", "/elsewhere")
    receiver.answers = {1: (307, {"Location": elsewhere})}
    subject, _, _ = await make_durable(local, receiver.url)
    out = await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: 2 in attempts(receiver))  # retried at the same URL, not moved
    first = next(o for i, o in dispatcher.outcomes if i == out.ids[0])
    assert (first.action, first.status) == ("nack", 307) and "not followed" in first.detail


async def test_410_dead_letters_at_once(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {1: (410, {})}
    subject, durable, _ = await make_durable(local, receiver.url, max_deliveries=5)
    out = await local.api.publish(None, subject, [event(1)])
    dl = (await eventually(lambda: _dead(local, durable)))[0]
    assert dl.event.attributes["lockgateoriginalid"].ce_string == str(out.ids[0])
    assert attempts(receiver) == {1}  # no retry after 410


async def test_max_deliveries_dead_letters(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    receiver.answers = {i: (500, {}) for i in range(1, 10)}
    subject, durable, _ = await make_durable(local, receiver.url, max_deliveries=2)
    await local.api.publish(None, subject, [event(1)])
    await eventually(lambda: _dead(local, durable))
    assert attempts(receiver) == {1, 2}


async def test_a_bound_stream_takes_precedence(
    local: Local, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    subject, durable, _ = await make_durable(local, receiver.url)
    sub = await local.api.subscribe(None, subject, durable=durable)
    await local.api.publish(None, subject, [event(1)])
    batch = await asyncio.wait_for(anext(aiter(sub)), 5)
    assert len({d.id for d in batch}) == 1 and receiver.got == []
    await sub.ack([batch[0].id])
    await sub.close()


class FixedResolver(AbstractResolver):
    """Resolves every name to ``addr`` (what a rebinding DNS server answers at delivery)."""

    def __init__(self, addr: str) -> None:
        self.addr = addr

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=self.addr, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


def _delivery(n: int = 1) -> Delivery:
    return Delivery(id=1000 + n, subject="wh.x", event=event(n), attempt=1)


async def test_the_address_is_checked_when_connecting(receiver: Receiver) -> None:
    """A name that resolved publicly when the durable was created and resolves to loopback
    at delivery (DNS rebinding) is refused at connect; the same resolver with private
    addresses allowed reaches the receiver, so it is the address connected to that counts."""
    url = f"http://rebind.example:{receiver.port}/hook"
    guarded = WebhookSender(WebhookSettings(timeout=2.0), FixedResolver("127.0.0.1"))
    try:
        out = await guarded.deliver(url, "acme", "d", _delivery(), ["whsec_" + "A" * 32])
        assert out.action == "nack" and "PrivateAddress" in out.detail, out
        # An address literal does not go through the resolver: checked on its own.
        out = await guarded.deliver(receiver.url, "acme", "d", _delivery(), ["k"])
        assert out.action == "nack" and "PrivateAddress" in out.detail, out
        assert receiver.got == []
    finally:
        await guarded.close()
    allowed = WebhookSender(
        WebhookSettings(timeout=2.0, allow_private=True), FixedResolver("127.0.0.1")
    )
    try:
        out = await allowed.deliver(url, "acme", "d", _delivery(), ["k"])
        assert out.action == "ack" and len(receiver.got) == 1
    finally:
        await allowed.close()


def test_verify_webhook_rejects_tampering_bad_stale_and_missing() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = json.dumps({"type": "payment", "lockgatesubject": "a.b", "lockgateorg": "acme"})
    raw = body.encode()
    now = int(time.time())
    good = {
        "webhook-id": "42",
        "webhook-timestamp": str(now),
        "webhook-signature": sign_webhook(secret, "42", now, raw),
    }
    verify_webhook(secret, good, raw)
    verify_webhook(secret, {k.upper(): v for k, v in good.items()}, raw)
    rotated = dict(good, **{"webhook-signature": "v1,AAAA " + good["webhook-signature"]})
    verify_webhook(secret, rotated, raw)
    cases = [
        ("whsec_" + base64.b64encode(b"x" * 24).decode(), good, raw, "BAD_SIGNATURE"),
        (secret, good, raw.replace(b"payment", b"harmless"), "BAD_SIGNATURE"),  # ce type
        (secret, good, raw.replace(b"a.b", b"a.c"), "BAD_SIGNATURE"),  # subject
        (secret, good, raw.replace(b"acme", b"evil"), "BAD_SIGNATURE"),  # org
        (secret, dict(good, **{"webhook-id": "43"}), raw, "BAD_SIGNATURE"),  # delivery id
        (secret, dict(good, **{"webhook-timestamp": str(now + 1)}), raw, "BAD_SIGNATURE"),
        (secret, {"webhook-timestamp": str(now), "webhook-id": "42"}, raw, "MISSING_SIGNATURE"),
        (secret, dict(good, **{"webhook-timestamp": "soon"}), raw, "BAD_SIGNATURE"),
    ]
    for key, headers, data, reason in cases:
        with pytest.raises(WebhookSignatureError) as info:
            verify_webhook(key, headers, data)
        assert info.value.reason == reason and info.value.hint
    old = now - 600
    stale = dict(
        good,
        **{
            "webhook-timestamp": str(old),
            "webhook-signature": sign_webhook(secret, "42", old, raw),
        },
    )
    with pytest.raises(WebhookSignatureError) as info:
        verify_webhook(secret, stale, raw, now=now)
    assert info.value.reason == "STALE_SIGNATURE" and "600" in info.value.message
    verify_webhook(secret, stale, raw, tolerance=900, now=now)


async def test_unencodable_event_is_dead_lettered_and_the_next_delivered(
    local: Local,
    receiver: Receiver,
    dispatcher: WebhookDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accept_malformed(monkeypatch)
    subject, durable, _ = await make_durable(local, receiver.url)
    plain = event(2)
    del plain.attributes["datacontenttype"]  # no content type: none is invented
    plain.binary_data = b"\x01\x02"
    ids = (await local.api.publish(None, subject, [malformed_event(1), plain])).ids
    await eventually(lambda: len(receiver.got) >= 1)
    _, _headers, body = receiver.got[0]
    got = doc(body)
    assert got["lockgatedeliveryid"] == str(ids[1]) and got["data_base64"] == "AQI="
    assert "datacontenttype" not in got
    dead = await eventually(lambda: _dead(local, durable))
    assert [d.event.attributes["lockgateoriginalid"].ce_string for d in dead] == [str(ids[0])]
    assert [o.action for i, o in dispatcher.outcomes if i == ids[0]] == ["dead"]


async def _dead(local: Local, durable: str) -> list[StoredEvent]:
    events, _ = await local.api.query(None, f"$dlq.{durable}")
    return events


async def test_the_http_gateway_shows_the_secret_once(local: Local, receiver: Receiver) -> None:
    name = unique("h")
    doc_ = {"pattern": "hook.>", "endpoint_url": receiver.url}
    async with local.session.put(f"{local.url}/v1/subscriptions/{name}", json=doc_) as resp:
        first = await resp.json()
    async with local.session.put(f"{local.url}/v1/subscriptions/{name}", json=doc_) as resp:
        second = await resp.json()
    assert str(first["webhook_secret"]).startswith("whsec_") and "webhook_secret" not in second
