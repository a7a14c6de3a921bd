"""The hand-rolled framing must agree byte for byte with the protobuf runtime."""

from __future__ import annotations

import pytest

from broker import wire
from broker.v1 import broker_pb2, cloudevent_pb2


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint(value: int) -> None:
    msg = broker_pb2.GetEventRequest(id=value)
    assert b"\x08" + wire.encode_varint(value) == msg.SerializeToString() or value == 0


def test_delivery_frames_decode_as_subscribe_response() -> None:
    ev = cloudevent_pb2.CloudEvent(
        id="1", source="s", spec_version="1.0", type="t", text_data="x" * 300
    )
    raw = ev.SerializeToString()
    sf = wire.subject_field("billing.eu")
    frames = [
        wire.delivery_frame(382760360051998720 + i, sf, raw, attempt=1 + i, reply_to="")
        for i in range(3)
    ]
    frames.append(wire.delivery_frame(5, sf, raw, 2, "$inbox.abc"))
    body = wire.subscribed_frame("eph-1", 99) + b"".join(frames)
    msg = broker_pb2.SubscribeResponse.FromString(body)
    assert msg.subscribed.name == "eph-1"
    assert msg.subscribed.last_id == 99
    assert [d.id for d in msg.deliveries] == [382760360051998720 + i for i in range(3)] + [5]
    assert [d.attempt for d in msg.deliveries] == [1, 2, 3, 2]
    assert msg.deliveries[3].reply_to == "$inbox.abc"
    assert all(d.subject == "billing.eu" and d.event == ev for d in msg.deliveries)
    split = wire.split_frames(b"".join(frames))
    assert [i for i, _ in split] == [d.id for d in msg.deliveries]
    assert [f for _, f in split] == frames
    inner = broker_pb2.Delivery.FromString(wire.frame_body(frames[1]))
    assert inner.attempt == 2


def test_batch_frames_equal_single_frames() -> None:
    sf = wire.subject_field("a.b")
    events = [b"e" * n for n in (0, 1, 127, 128, 16383, 16384, 20000)] * 40
    for first in (5, (1 << 56) + 120, 382760360051998720, (1 << 63) - 500):
        ids = [first + k for k in range(len(events))]
        assert wire.delivery_frames(ids, sf, events) == [
            wire.delivery_frame(i, sf, e) for i, e in zip(ids, events, strict=True)
        ]


def test_batch_frames_append_a_suffix_to_every_event() -> None:
    tagged = cloudevent_pb2.CloudEvent()
    tagged.attributes["priority"].ce_string = "high"
    suffix = tagged.SerializeToString()
    ev = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    ids = [382760360051998720 + k for k in range(300)]
    frames = wire.delivery_frames(
        ids, wire.subject_field("a.b"), [ev.SerializeToString()] * 300, suffix
    )
    msg = broker_pb2.SubscribeResponse.FromString(b"".join(frames))
    assert len(msg.deliveries) == 300
    for d in msg.deliveries:
        assert d.event.attributes["priority"].ce_string == "high"
        assert d.event.id == "1" and d.attempt == 1
