"""The Publish stream's byte-level reader must agree with protobuf and the per-event checks
whenever it reads a frame, and leave every other frame to them."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.broker.pipeline import check_event
from lockgate.broker.publishframe import FrameReader, ScannedEvents
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients._wire import EventEncoder, encode_publish_frame, encode_publish_request

CloudEvent = cloudevent_pb2.CloudEvent


def _attrs(**values: str) -> dict[str, CloudEvent.CloudEventAttributeValue]:
    return {k: CloudEvent.CloudEventAttributeValue(ce_string=v) for k, v in values.items()}


def _client_frame(n: int = 3, data: object = b"x" * 200, batch_id: int = 9) -> bytes:
    enc = EventEncoder()
    events = [enc.encode(data, type="t.created", source="agent://a", id=f"e{i}") for i in range(n)]
    return encode_publish_request(b"orders.eu", events, batch_id)


def _agrees(raw: bytes, frame: tuple[str, int, ScannedEvents, bool]) -> None:
    req = broker_pb2.PublishRequest.FromString(raw)
    subject, batch_id, events, fresh = frame
    assert (subject, batch_id, fresh) == (req.subject, req.batch_id, req.fresh)
    assert len(events) == len(req.events)
    for k, ev in enumerate(req.events):
        assert check_event(ev) is None
        assert CloudEvent.FromString(events.raws[k]) == ev == events[k]
        assert (events.ids[k], events.sources[k], events.types[k]) == (ev.id, ev.source, ev.type)
        assert events.std[k] == (ev.id, ev.source, ev.type, "1.0", None)
    assert events[:] == list(req.events)  # the whole frame parsed at once
    assert events.keys("acme") == [("acme", e.source, e.id) for e in req.events]


def test_reads_the_clients_frames() -> None:
    for data in (b"x" * 200, "text", {"a": 1}, b"", b"y" * 20000):
        raw = _client_frame(data=data)
        frame = FrameReader().read(raw)
        assert frame is not None, data
        _agrees(raw, frame)


def test_reads_protobufs_own_serialisation_and_mixed_heads() -> None:
    events = [
        CloudEvent(id="1", source="s", spec_version="1.0", type="a", binary_data=b"\x00\x12"),
        CloudEvent(id="2", source="s", spec_version="1.0", type="a"),
        CloudEvent(
            id="3",
            source="s2",
            spec_version="1.0",
            type="b",
            text_data="é",
            attributes=_attrs(subject="x", datacontenttype="text/plain"),
        ),
        CloudEvent(id="4", source="s", spec_version="1.0", type="a", binary_data=b"z"),
    ]
    raw = broker_pb2.PublishRequest(subject="a.b", events=events, batch_id=2**64 - 1)
    frame = FrameReader().read(raw.SerializeToString())
    assert frame is not None
    _agrees(raw.SerializeToString(), frame)


def test_an_empty_frame_and_field_order() -> None:
    reader = FrameReader()
    empty = reader.read(b"")
    assert empty is not None and empty[:2] == ("", 0) and len(empty[2]) == 0
    raw = b"\x18\x05" + _client_frame(batch_id=0)  # batch_id first; a later one would win
    frame = reader.read(raw)
    assert frame is not None
    _agrees(raw, frame)


def _event(**fields: object) -> bytes:
    base: dict[str, object] = {"id": "1", "source": "s", "spec_version": "1.0", "type": "t"}
    base.update(fields)
    return CloudEvent(**base).SerializeToString()  # type: ignore[arg-type]


def _frame(*events: bytes) -> bytes:
    return encode_publish_request(b"a.b", list(events), 1)


@pytest.mark.parametrize(
    "raw",
    [
        _frame(_event(type="")),  # invalid: the general path names the error
        _frame(_event(spec_version="0.3")),
        _frame(_event(id="")),
        _frame(_event(source="")),
        _frame(_event(id="x" * 200)),  # valid, but a long id is not read here
        _frame(_event(attributes=_attrs(**{"Bad-Name": "v"}))),
        _frame(_event(proto_data={"type_url": "x/y"})),  # type: ignore[dict-item]
        _frame(_event(), _event(binary_data=b"d") + b"\x0a\x01z"),  # an id after the data
        _frame(_event(binary_data=b"d") + b"\x12\x01s"),  # a head field after the data
        _frame(_event() + b"\x78\x01"),  # an unknown field
        _frame(b"\x12\x01s" + _event()),  # not the id first
        _frame(_event(binary_data=b"d")[:-1]),  # the data overruns the event
        _frame(_event(text_data="ok")[:-2] + b"\xff\xfe"),  # text_data not UTF-8
        _frame(_event()) + b"\x28\x01",  # an unknown field of the request
        _frame(_event())[:-3],  # truncated
        b"\x0a\x02\xff\xfe" + _frame(_event())[9:],  # a subject not UTF-8
        _frame(_event()) + b"\x18" + b"\xff" * 9 + b"\x7f",  # a batch_id past 64 bits
    ],
)
def test_leaves_other_frames_to_the_general_path(raw: bytes) -> None:
    assert FrameReader().read(raw) is None


def test_a_head_found_invalid_stays_invalid_and_valid_heads_are_remembered() -> None:
    reader = FrameReader()
    bad = _frame(_event(type=""))
    assert reader.read(bad) is None
    assert reader.read(bad) is None
    good = _client_frame()
    assert reader.read(good) is not None
    assert reader.read(good) is not None


def test_reads_runs_of_alike_events_between_unlike_ones() -> None:
    enc = EventEncoder()
    like = [
        enc.encode(b"d" * 130, type="t", source="agent://a", id=f"id-{i:04}") for i in range(40)
    ]
    unlike = enc.encode("text", type="u", source="agent://a", id="other")
    for events in (like, [*like[:20], unlike, *like[20:]], [unlike, *like], [*like, unlike]):
        for raw in (
            encode_publish_request(b"a.b", events, 7),
            b"\x18\x07" + encode_publish_request(b"a.b", events, 0),
        ):
            frame = FrameReader().read(raw)
            assert frame is not None
            _agrees(raw, frame)


def test_a_run_with_a_text_not_utf8_goes_to_the_general_path() -> None:
    enc = EventEncoder()
    events = [enc.encode("ab", type="t", source="s", id=f"{i:02}") for i in range(10)]
    events[6] = events[6][:-2] + b"\xff\xfe"
    assert FrameReader().read(encode_publish_request(b"a.b", events, 1)) is None
    events[6] = events[5]  # valid again (a duplicate id is the pipeline's to find)
    assert FrameReader().read(encode_publish_request(b"a.b", events, 1)) is not None


TEXT = st.text(max_size=12)
ATTRS = st.dictionaries(
    st.sampled_from(["subject", "datacontenttype", "Bad", "time", "x1"]),
    st.builds(lambda v: CloudEvent.CloudEventAttributeValue(ce_string=v), TEXT),
    max_size=2,
)
ANY_EVENT = st.builds(
    lambda id_, source, version, type_, attrs, data: CloudEvent(
        id=id_,
        source=source,
        spec_version=version,
        type=type_,
        attributes=attrs,
        **data,
    ),
    TEXT,
    st.sampled_from(["", "s", "agent://a"]),
    st.sampled_from(["1.0", "", "0.3"]),
    st.sampled_from(["", "t"]),
    ATTRS,
    st.one_of(
        st.just({}),
        st.builds(lambda b: {"binary_data": b}, st.binary(max_size=300)),
        st.builds(lambda t: {"text_data": t}, TEXT),
    ),
)


# Generation is slow on a loaded machine (the CI runs beside other suites): no health check
# for that, and no deadline.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_EVENT, max_size=6), st.integers(0, 2**64 - 1))
def test_whatever_it_reads_the_general_path_reads_alike(
    events: list[CloudEvent], batch_id: int
) -> None:
    raw = broker_pb2.PublishRequest(subject="a.b", events=events, batch_id=batch_id)
    frame = FrameReader().read(raw.SerializeToString())
    if frame is not None:
        _agrees(raw.SerializeToString(), frame)
    else:  # ids are short here: every frame of valid events is read
        assert not all(check_event(e) is None for e in events)


ALIKE = st.sampled_from(
    [
        CloudEvent(id="aa", source="s", spec_version="1.0", type="t", binary_data=b"\x12" * 9),
        CloudEvent(id="bb", source="s", spec_version="1.0", type="t", binary_data=b"\x0a" * 9),
        CloudEvent(id="c", source="s", spec_version="1.0", type="t", binary_data=b"x" * 10),
        CloudEvent(id="dd", source="s", spec_version="1.0", type="t", text_data="é" * 4 + "x"),
        CloudEvent(id="ee", source="s", spec_version="1.0", type="t"),
        CloudEvent(id="", source="s", spec_version="1.0", type="t", binary_data=b"y" * 9),
    ]
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ALIKE, st.integers(1, 40)), max_size=6), st.integers(0, 2**64 - 1))
def test_runs_of_alike_events_read_as_the_general_path_reads_them(
    runs: list[tuple[CloudEvent, int]], batch_id: int
) -> None:
    """Runs of events of one length and layout next to others of the same length but not the
    same layout (another id length, data field or an invalid event)."""
    events = [event for event, count in runs for _ in range(count)]
    raw = broker_pb2.PublishRequest(subject="a.b", events=events, batch_id=batch_id)
    frame = FrameReader().read(raw.SerializeToString())
    if frame is not None:
        _agrees(raw.SerializeToString(), frame)
    else:
        assert not all(check_event(e) is None for e in events)


def test_reads_the_fresh_flag_where_protobuf_reads_it() -> None:
    events = EventEncoder().entries([b"a", "b"], "t", "src")
    for fresh in (False, True):
        raw = encode_publish_frame(b"a.b", events, 3, fresh=fresh)
        frame = FrameReader().read(raw)
        assert frame is not None
        _agrees(raw, frame)
        assert frame[3] is fresh
    # Any order, any true varint, and the last value wins, as protobuf reads it.
    for other in (
        b"\x20\x02" + raw,
        raw + b"\x20\x00",
        b"\x20\x81\x01" + encode_publish_frame(b"a.b", events, 1),
    ):
        frame = FrameReader().read(other)
        assert frame is not None
        _agrees(other, frame)
