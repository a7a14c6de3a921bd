"""The W3C trace context across the gateways: an HTTP publish's ``traceparent`` and
``tracestate`` headers become the attributes of the events that carry none (an event's own
attribute wins); a webhook POST carries the event's trace context as HTTP headers."""

from __future__ import annotations

import json

from lockgate.broker.api import Delivery
from lockgate.gateways.webhook import WebhookSender, WebhookSettings
from tests.gateways.gw_kit import Local, event, unique

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_an_http_publish_continues_the_callers_trace(local: Local) -> None:
    subject = unique("trace.")
    docs = [
        {"specversion": "1.0", "id": "t1", "source": "/t", "type": "t.x"},
        {"specversion": "1.0", "id": "t2", "source": "/t", "type": "t.x", "traceparent": OWN},
    ]
    resp = await local.session.post(
        f"{local.url}/v1/subjects/{subject}/events",
        data=json.dumps(docs).encode(),
        headers={
            "Content-Type": "application/cloudevents-batch+json",
            "traceparent": CALLER,
            "tracestate": "k=v",
        },
    )
    assert resp.status == 200, await resp.text()
    first, second = (await resp.json())["ids"]
    got = await (await local.session.get(f"{local.url}/v1/events/{first}")).json()
    assert got["event"]["traceparent"] == CALLER and got["event"]["tracestate"] == "k=v"
    got = await (await local.session.get(f"{local.url}/v1/events/{second}")).json()
    assert got["event"]["traceparent"] == OWN


async def test_a_webhook_post_carries_the_events_trace_context() -> None:
    sender = WebhookSender(WebhookSettings())
    ev = event(1)
    ev.attributes["traceparent"].ce_string = CALLER
    headers, _ = sender.request(
        "acme", "d", Delivery(id=1, subject="wh.x", event=ev, attempt=1), ["whsec_" + "A" * 32]
    )
    assert headers["traceparent"] == CALLER and "tracestate" not in headers
    plain, _ = sender.request(
        "acme",
        "d",
        Delivery(id=2, subject="wh.x", event=event(2), attempt=1),
        ["whsec_" + "A" * 32],
    )
    assert "traceparent" not in plain
