"""The hand-rolled framing must agree byte for byte with the protobuf runtime."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.broker import wire
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

# Sizes around the 1- and 2-byte varint limits; the contents are opaque to the framing.
SIZES = st.one_of(st.integers(0, 200), st.integers(16370, 16400))
BLOBS = st.builds(lambda n, b: bytes((b,)) * n, SIZES, st.integers(0, 255))
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
EVENT_IDS = st.integers(min_value=1, max_value=2**63 - 1)
SUBJECTS = st.text(min_size=1, max_size=40)
EVENTS = st.builds(
    cloudevent_pb2.CloudEvent,
    id=st.text(max_size=20),
    source=st.text(max_size=20),
    spec_version=st.just("1.0"),
    type=st.text(max_size=20),
    binary_data=BLOBS,
)


@given(UINT64)
def test_varint_is_the_runtimes(value: int) -> None:
    # A packed repeated field holds the varint even for 0 (a scalar 0 is not written at all).
    packed = broker_pb2.Ack(ids=[value]).SerializeToString()
    v = wire.encode_varint(value)
    assert packed == b"\x0a" + bytes((len(v),)) + v
    assert wire.read_varint(b"\xff" + v + b"\x00", 1) == (value, 1 + len(v))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**63 - 1, 2**64 - 1])
def test_varint_edges(value: int) -> None:
    assert broker_pb2.Ack(ids=[value]).SerializeToString()[2:] == wire.encode_varint(value)


def test_negative_varint_is_refused() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        wire.encode_varint(-1)


@given(BLOBS)
def test_length_delimited_is_the_runtimes(value: bytes) -> None:
    assert wire.length_delimited(b"\x32", value) == (
        cloudevent_pb2.CloudEvent(binary_data=value).SerializeToString() if value else b"\x32\x00"
    )


@given(
    EVENT_IDS,
    SUBJECTS,
    EVENTS,
    st.integers(min_value=1, max_value=2**32 - 1),
    st.text(max_size=30),
)
def test_delivery_frame_is_the_runtimes(
    event_id: int, subject: str, event: cloudevent_pb2.CloudEvent, attempt: int, reply_to: str
) -> None:
    frame = wire.delivery_frame(
        event_id, wire.subject_field(subject), event.SerializeToString(), attempt, reply_to
    )
    delivery = broker_pb2.Delivery(
        id=event_id, subject=subject, event=event, attempt=attempt, reply_to=reply_to
    )
    assert frame == broker_pb2.SubscribeResponse(deliveries=[delivery]).SerializeToString()
    assert wire.split_frames(frame) == [(event_id, frame)]
    assert wire.frame_body(frame) == delivery.SerializeToString()


@given(
    st.one_of(EVENT_IDS, st.integers(min_value=(1 << 56), max_value=(1 << 63) - 2000)),
    SUBJECTS,
    st.lists(SIZES, min_size=1, max_size=260),
    st.binary(max_size=50),
)
def test_batch_frames_equal_single_frames(
    first: int, subject: str, sizes: list[int], suffix: bytes
) -> None:
    events = [b"e" * n for n in sizes]
    if first + len(events) >= 1 << 63:
        first = (1 << 63) - len(events) - 1
    sf = wire.subject_field(subject)
    ids = [first + k for k in range(len(events))]
    frames = wire.delivery_frames(ids, sf, events, suffix)
    assert frames == [
        wire.delivery_frame(i, sf, e + suffix) for i, e in zip(ids, events, strict=True)
    ]
    assert wire.split_frames(b"".join(frames)) == list(zip(ids, frames, strict=True))


# No deadline: a loaded machine (CI beside other suites) takes its time on large events.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(EVENT_IDS, st.integers(min_value=(1 << 56), max_value=(1 << 63) - 2000)),
    SUBJECTS,
    st.integers(1, 260),  # ids cross runs of 128 (where all but the low byte change)
    st.one_of(st.integers(0, 200), st.sampled_from([16383, 16384]), st.none()),
    st.binary(max_size=50),
    st.integers(0, 260),
)
def test_a_batch_body_is_its_frames_joined(
    first: int, subject: str, count: int, size: int | None, suffix: bytes, gap: int
) -> None:
    """One length or several, consecutive ids or not (``gap``: where they jump)."""
    first = min(first, (1 << 63) - count - 10)
    ids = [first + k + (k >= gap) * 5 for k in range(count)]
    events = [b"e" * (k % 3 if size is None else size) for k in range(count)]
    sf = wire.subject_field(subject)
    body = wire.delivery_body(ids, sf, events, suffix)
    assert body == b"".join(wire.delivery_frames(ids, sf, events, suffix))
    assert [i for i, _ in wire.split_frames(body)] == ids


@given(st.text(max_size=40), UINT64)
def test_subscribed_frame_is_the_runtimes(name: str, last_id: int) -> None:
    expected = broker_pb2.SubscribeResponse(
        subscribed=broker_pb2.Subscribed(name=name, last_id=last_id)
    ).SerializeToString()
    frame = wire.subscribed_frame(name, last_id)
    assert broker_pb2.SubscribeResponse.FromString(
        frame
    ) == broker_pb2.SubscribeResponse.FromString(expected)
    if name and last_id:  # the runtime leaves out default scalars; the frame always writes them
        assert frame == expected


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


@given(
    st.lists(
        st.one_of(
            EVENT_IDS,
            st.integers(min_value=(1 << 56) - 3, max_value=(1 << 56) + 300),
            st.integers(min_value=(1 << 62), max_value=(1 << 62) + 3),
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.sampled_from([0, 1, 120, 127, 128, 16_383, 16_384, 70_000]), min_size=1),
)
def test_split_frames_reads_any_ids_and_lengths(ids: list[int], sizes: list[int]) -> None:
    # Ids in any order (runs that share their high varint bytes, and ones that do not),
    # lengths of one, two and three varint bytes.
    events = [b"e" * sizes[k % len(sizes)] for k in range(len(ids))]
    frames = [wire.delivery_frame(i, b"\x12\x01s", e) for i, e in zip(ids, events, strict=True)]
    assert wire.split_frames(b"".join(frames)) == list(zip(ids, frames, strict=True))
