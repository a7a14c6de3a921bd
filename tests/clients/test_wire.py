"""The hand-rolled publish encoding decodes, with the generated classes, to what was meant."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients._codec import decode_attributes, decode_data, to_cloudevent
from lockgate.clients._wire import EventEncoder, encode_publish_request


@dataclasses.dataclass
class Point:
    x: int
    y: int


@given(
    st.text(min_size=1, max_size=60),
    st.lists(st.binary(max_size=300), max_size=20),
    st.integers(min_value=1, max_value=2**64 - 1),
)
def test_publish_request_is_the_runtimes(subject: str, events: list[bytes], batch_id: int) -> None:
    # Event bytes are opaque to the frame; real CloudEvents keep it valid protobuf throughout.
    raws = [cloudevent_pb2.CloudEvent(id="i", binary_data=e).SerializeToString() for e in events]
    expected = broker_pb2.PublishRequest(
        subject=subject,
        events=[cloudevent_pb2.CloudEvent.FromString(r) for r in raws],
        batch_id=batch_id,
    ).SerializeToString()
    assert encode_publish_request(subject.encode(), raws, batch_id) == expected


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
