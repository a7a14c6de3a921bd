"""The hand-rolled publish encoding decodes, with the generated classes, to what was meant."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.broker.wire import encode_varint
from lockgate.clients import PublishResult
from lockgate.clients._codec import decode_attributes, decode_data, to_cloudevent
from lockgate.clients._wire import (
    EventEncoder,
    encode_publish_frame,
    encode_publish_request,
    entry_event_size,
)


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


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.text(max_size=300),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
            st.lists(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False))),
            st.integers(),
        ),
        max_size=40,
    )
)
def test_batch_entries_decode_like_single_events(items: list[object]) -> None:
    enc = EventEncoder()
    entries = enc.entries(items, "t.x", "agent://a")
    alone = [enc.entry(item, "t.x", "agent://a") for item in items]
    frame = encode_publish_frame(b"a.b", [*entries, *alone], 9)
    req = broker_pb2.PublishRequest.FromString(frame)
    assert req.subject == "a.b" and req.batch_id == 9
    ids = [e.id for e in req.events]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)  # fresh, distinct
    for event, item in zip(req.events, [*items, *items], strict=True):
        expected = to_cloudevent(item, type="t.x", source="agent://a", id=event.id)
        assert event == expected
    for raw, event in zip([*entries, *alone], req.events, strict=True):
        assert entry_event_size(raw) == event.ByteSize()


def test_an_entry_keeps_a_given_id_and_completes_a_cloudevent() -> None:
    enc = EventEncoder()
    given_id = broker_pb2.PublishRequest.FromString(
        encode_publish_frame(b"s", [enc.entry("x", "t", "src", "my-id")], 1)
    ).events[0]
    assert (given_id.id, given_id.text_data) == ("my-id", "x")
    for no_id in ("", None):  # as publish(id=...) always had it: a fresh one
        fresh = broker_pb2.PublishRequest.FromString(
            encode_publish_frame(b"s", [enc.entry("x", "t", "src", no_id)], 1)
        ).events[0]
        assert len(fresh.id) == 32
    own = cloudevent_pb2.CloudEvent(id="e1", binary_data=b"\x00")
    [completed] = broker_pb2.PublishRequest.FromString(
        encode_publish_frame(b"s", enc.entries([own], "t", "src"), 1)
    ).events
    assert (completed.id, completed.type, completed.source, completed.binary_data) == (
        "e1",
        "t",
        "src",
        b"\x00",
    )
    big = enc.entry(b"z" * 20_000, "t", "s")
    assert entry_event_size(big) == len(big) - 1 - len(encode_varint(entry_event_size(big)))


def test_publish_results_stay_frozen_values() -> None:
    ok = PublishResult(7)
    assert (ok.id, ok.duplicate, ok.error, ok.ok) == (7, False, None, True)
    assert ok == PublishResult(7) and hash(ok) == hash(PublishResult(7)) and ok != PublishResult(8)
    assert repr(PublishResult(3, True)) == "PublishResult(id=3, duplicate=True, error=None)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.id = 8  # type: ignore[misc]


def test_fresh_ids_count_up_across_batches_and_single_events() -> None:
    enc = EventEncoder()
    first = enc.entries([b"x"] * 5000, "t", "s")  # past a 4096 boundary of the counter
    single = enc.entry(b"x", "t", "s")
    events = broker_pb2.PublishRequest.FromString(
        encode_publish_frame(b"s", [*first, single, *enc.entries(["y"], "t", "s")], 1)
    ).events
    prefixes = {e.id[:16] for e in events}
    counters = [int(e.id[16:], 16) for e in events]
    assert len(prefixes) == 1 and counters == list(range(counters[0], counters[0] + 5002))


@pytest.mark.parametrize("size", [16_200, 16_300, 16_400, 100_000])
def test_batch_entries_of_large_payloads(size: int) -> None:
    items: list[object] = [b"b" * size, "t" * size]
    frame = encode_publish_frame(b"s", EventEncoder().entries(items, "t", "src"), 1)
    events = broker_pb2.PublishRequest.FromString(frame).events
    assert [decode_data(e) for e in events] == items
