"""A stored batch becomes one row per event (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from lockgate.broker import wire
from lockgate.broker.historydb.rows import BadBatch, event_rows, frames, is_json_type
from lockgate.broker.ids import time_ms_of
from lockgate.broker.store import Batch
from tests.broker.historydb.conftest import event, make_batch


def micros(when: dt.datetime) -> int:
    return (when - dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def test_each_event_becomes_a_row_with_its_attributes() -> None:
    a = event("a-1", '{"n": 1}', "application/json")
    a.attributes["time"].ce_string = "2025-03-01T12:00:00.123456Z"
    b = event("b-2", b"\x00\xff", "application/octet-stream")
    batch = make_batch("acme", "orders.eu", [a, b], policy="v7")
    batch = Batch(**{**{f: getattr(batch, f) for f in batch.__slots__}, "seq": 42})
    rows = event_rows(batch)
    assert [r[0] for r in rows] == [batch.first_id, batch.last_id]
    first = rows[0]
    assert (
        first[1]
        == micros(dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) + time_ms_of(batch.first_id) * 1000
    )  # PostgreSQL's binary timestamp: microseconds since 2000
    assert first[2:8] == ("acme", "orders.eu", 42, "a-1", "/test", "t.created")
    assert first[8] == micros(dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC))
    assert first[9:11] == ("v7", "application/json")
    assert first[11] == a.SerializeToString()
    assert first[12] == '{"n": 1}'
    assert first[13] == '["bot",[]]'  # the publisher
    second = rows[1]
    assert second[8] is None and second[12] is None  # no time; not JSON


def test_a_time_outside_rfc_3339_years_is_left_out() -> None:
    ev = event("x")
    ev.attributes["time"].ce_timestamp.seconds = 253_402_300_800  # year 10000
    assert event_rows(make_batch("acme", "s", [ev]))[0][8] is None


def test_json_by_content_type() -> None:
    assert is_json_type(None) and is_json_type("application/json")
    assert is_json_type("application/vnd.x+json; charset=utf-8")
    assert not is_json_type("text/plain")


def test_a_nul_in_an_id_does_not_reach_postgresql() -> None:
    rows = event_rows(make_batch("acme", "s", [event("a\x00b", "x\x00")]))
    assert rows[0][5] == "a\ufffdb" and rows[0][12] is None


def test_the_event_bytes_come_out_of_the_frame_as_stored() -> None:
    raw = event("x", "hi").SerializeToString() + b"\x2a\x00"  # bytes a policy appended
    frame = wire.delivery_frame(99, wire.subject_field("s"), raw)
    assert frames(Batch(99, 99, "acme", "s", 1, "v", frame)) == [(99, raw)]


@pytest.mark.parametrize(
    "body",
    [
        b"\x12\x05\x08\x01",  # ends inside the frame
        b"\x12\x03\x0d\x00\x00",  # a fixed32 field
        wire.delivery_frame(7, wire.subject_field("s"), b"\xff\xff"),  # not a CloudEvent
        b"\x0a\x00" + wire.delivery_frame(7, wire.subject_field("s"), b""),  # beside a frame
        wire.delivery_frame(0, wire.subject_field("s"), b""),  # no id
    ],
)
def test_a_body_that_is_not_frames_is_refused(body: bytes) -> None:
    batch = Batch(1, 1, "acme", "s", 1, "v", body)
    with pytest.raises(BadBatch):
        event_rows(batch)


def test_frames_of_any_layout_and_ids_across_runs_of_128() -> None:
    base = (1 << 60) + 120  # the ids cross a multiple of 128: the varint's high bytes change
    ids = list(range(base, base + 20))
    raw = [event(str(i)).SerializeToString() for i in ids]
    sf = wire.subject_field("s")
    frames = wire.delivery_frames(ids[:10], sf, raw[:10])
    frames.append(wire.delivery_frame(ids[10], sf, raw[10], attempt=3, reply_to="$inbox.x"))
    frames.append(wire.delivery_frame(5, sf, raw[11]))  # a short id: another layout
    frames += wire.delivery_frames(ids[12:], sf, raw[12:])
    batch = Batch(5, ids[-1], "acme", "s", 20, "v", b"".join(frames))
    rows = event_rows(batch)
    assert [r[0] for r in rows] == [*ids[:11], 5, *ids[12:]]
    assert [r[11] for r in rows] == raw
