"""The hand-rolled publish encoding decodes, with the generated classes, to what was meant."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from broker.v1 import broker_pb2, cloudevent_pb2
from clients._codec import decode_attributes, decode_data, to_cloudevent
from clients._wire import EventEncoder, encode_publish_request, varint


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63])
def test_varint_matches_protobuf(n: int) -> None:
    encoded = broker_pb2.PublishRequest(batch_id=n).SerializeToString()
    assert encoded == (b"\x18" + varint(n) if n else b"")


@pytest.mark.parametrize(
    "data",
    [
        "hi",
        "ünïcødé ✓",
        "x" * 20_000,
        b"\x00\xff" * 100,
        {"a": [1, None]},
        [1, 2],
        3,
        None,
        Point(1, 2),
    ],
)
def test_event_bytes_decode_like_the_codec(data: object) -> None:
    enc = EventEncoder()
    raw = enc.encode(data, type="t.x", source="agent://a/" + "s" * 200, id="id-1")
    event = cloudevent_pb2.CloudEvent.FromString(raw)
    expected = to_cloudevent(data, type="t.x", source="agent://a/" + "s" * 200, id="id-1")
    assert event == expected
    assert decode_data(event) == decode_data(expected)
    again = enc.encode(data, type="t.x", source="agent://a/" + "s" * 200, id="id-2")
    assert cloudevent_pb2.CloudEvent.FromString(again).id == "id-2"  # cached head reused


def test_attributes_and_content_type_override() -> None:
    when = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    raw = EventEncoder().encode(
        "<a/>",
        type="t",
        source="s",
        id="1",
        attributes={"traceparent": "00-abc", "n": 3, "when": when},
        datacontenttype="application/xml",
    )
    event = cloudevent_pb2.CloudEvent.FromString(raw)
    assert decode_attributes(event) == {
        "traceparent": "00-abc",
        "n": 3,
        "when": when,
        "datacontenttype": "application/xml",
    }
    plain = cloudevent_pb2.CloudEvent.FromString(
        EventEncoder().encode("<a/>", type="t", source="s", id="1", datacontenttype="text/xml")
    )
    assert plain.attributes["datacontenttype"].ce_string == "text/xml"


def test_publish_request_frame() -> None:
    enc = EventEncoder()
    events = [enc.encode(i, type="t", source="s", id=str(i)) for i in range(300)]
    frame = encode_publish_request(b"orders.eu", events, 77)
    req = broker_pb2.PublishRequest.FromString(frame)
    assert (req.subject, req.batch_id, len(req.events)) == ("orders.eu", 77, 300)
    assert [decode_data(e) for e in req.events] == list(range(300))
