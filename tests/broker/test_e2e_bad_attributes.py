"""Attribute values are validated by the CloudEvents type rules on the gRPC publish path
(broker/cloudevents.py): each bad value is refused with INVALID_EVENT and stored nowhere,
while the good events of the same batch are stored."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import (
    CloudEvent,
    Stubs,
    error_info,
    event,
    publish_batches,
    query_all,
    unique,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _nanos(ev: CloudEvent) -> None:
    ev.attributes["time"].ce_timestamp.nanos = 1_000_000_000


def _seconds(ev: CloudEvent) -> None:
    ev.attributes["time"].ce_timestamp.seconds = 253_402_300_800  # the year 10000


def _time_text(ev: CloudEvent) -> None:
    ev.attributes["time"].ce_string = "yesterday"


def _uri(ev: CloudEvent) -> None:
    ev.attributes["dataschema"].ce_uri = "not a uri"


def _content_type(ev: CloudEvent) -> None:
    ev.attributes["datacontenttype"].ce_integer = 7


def _control(ev: CloudEvent) -> None:
    ev.attributes["note"].ce_string = "a\x00b"


def _name(ev: CloudEvent) -> None:
    ev.attributes["Bad-Name"].ce_string = "x"


def _no_value(ev: CloudEvent) -> None:
    ev.attributes["empty"].SetInParent()


BAD: list[tuple[str, Callable[[CloudEvent], None]]] = [
    ("nanos", _nanos),
    ("seconds", _seconds),
    ("time-text", _time_text),
    ("uri", _uri),
    ("content-type", _content_type),
    ("control-char", _control),
    ("name", _name),
    ("no-value", _no_value),
]


@pytest.mark.parametrize(("label", "spoil"), BAD, ids=[b[0] for b in BAD])
async def test_bad_attribute_value_is_refused(
    stubs: Stubs, label: str, spoil: Callable[[CloudEvent], None]
) -> None:
    subject = unique("badattr")
    bad = event("bad")
    spoil(bad)
    [resp] = await publish_batches(stubs.broker, subject, [[event("good"), bad]])
    assert [(e.index, e.reason) for e in resp.errors] == [(1, "INVALID_EVENT")]
    assert resp.errors[0].message
    stored = await query_all(stubs.broker, subject)
    assert [s.event.text_data for s in stored] == ["good"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=bad), timeout=10
        )
    code, reason, meta = error_info(exc.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVENT")
    assert meta.get("hint")


async def test_valid_attributes_pass(stubs: Stubs) -> None:
    subject = unique("goodattr")
    ev = event("ok")
    ev.attributes["time"].ce_timestamp.seconds = 1_714_564_800
    ev.attributes["dataschema"].ce_uri = "https://example.com/s.json"
    ev.attributes["datacontenttype"].ce_string = "text/plain"
    ev.attributes["123"].ce_integer = 1
    ev.attributes["note"].ce_string = "ünïcode"
    [resp] = await publish_batches(stubs.broker, subject, [[ev]])
    assert not resp.errors and resp.ids[0]


# The broker's own markers: it adds lockgateroutedfrom (routes) and lockgateoriginal*/
# lockgatedlq* (dead letters) after the checks; a publisher may not forge them.
BROKER_NAMES = ["lockgateroutedfrom", "lockgateoriginalsubject", "lockgatedlqdurable", "lockgate"]


@pytest.mark.parametrize("name", BROKER_NAMES)
async def test_broker_attribute_names_are_refused(stubs: Stubs, name: str) -> None:
    subject = unique("forged")
    bad = event("bad")
    bad.attributes[name].ce_string = "orders.paid"
    [resp] = await publish_batches(stubs.broker, subject, [[event("good"), bad]])
    assert [(e.index, e.reason) for e in resp.errors] == [(1, "INVALID_EVENT")]
    assert name in resp.errors[0].message
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=bad), timeout=10
        )
    code, reason, meta = error_info(exc.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_EVENT")
    assert meta["attribute"] == name and meta["hint"]
    stored = await query_all(stubs.broker, subject)
    assert [s.event.text_data for s in stored] == ["good"]
    assert not any(name in s.event.attributes for s in stored)
