"""The pure codec: Python values <-> CloudEvents, start positions; no server."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pydantic
import pytest

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients._codec import (
    AttributeValue,
    complete_cloudevent,
    decode_attributes,
    decode_data,
    to_cloudevent,
    to_duration,
    to_start_position,
)


class Invoice(pydantic.BaseModel):
    number: int
    total: float


@dataclasses.dataclass
class Point:
    x: int
    y: int


def ctype(ev: cloudevent_pb2.CloudEvent) -> str:
    return ev.attributes["datacontenttype"].ce_string


def test_required_attributes_and_defaults() -> None:
    ev = to_cloudevent("hi")
    assert ev.spec_version == "1.0"
    assert ev.type == "lockgate.event"
    assert ev.source.startswith("lockgate://client/")
    assert len(ev.id) == 32 and int(ev.id, 16) >= 0
    assert to_cloudevent("x").id != ev.id


@pytest.mark.parametrize(
    ("data", "field", "content_type"),
    [
        (b"\x00\x01", "binary_data", "application/octet-stream"),
        ("hello", "text_data", "text/plain"),
        ({"a": [1, 2.5, None, True]}, "text_data", "application/json"),
        ([1, 2], "text_data", "application/json"),
        (3, "text_data", "application/json"),
        (None, "text_data", "application/json"),
    ],
)
def test_payload_round_trip(data: object, field: str, content_type: str) -> None:
    ev = to_cloudevent(data, source="s", id="1")
    assert ev.WhichOneof("data") == field
    assert ctype(ev) == content_type
    assert decode_data(ev) == data


def test_pydantic_model_round_trip() -> None:
    ev = to_cloudevent(Invoice(number=7, total=9.5))
    assert ctype(ev) == "application/json"
    assert decode_data(ev) == {"number": 7, "total": 9.5}
    assert decode_data(ev, Invoice) == Invoice(number=7, total=9.5)


def test_dataclass_round_trip() -> None:
    ev = to_cloudevent(Point(1, 2))
    assert decode_data(ev) == {"x": 1, "y": 2}
    assert decode_data(ev, Point) == Point(1, 2)


def test_model_validation_error_surfaces() -> None:
    ev = to_cloudevent({"number": "not a number", "total": 1})
    with pytest.raises(pydantic.ValidationError):
        decode_data(ev, Invoice)


def test_json_default_handles_common_types() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    ev = to_cloudevent({"when": when, "tags": {"a"}, "p": Point(1, 2)})
    assert decode_data(ev) == {"when": when.isoformat(), "tags": ["a"], "p": {"x": 1, "y": 2}}


def test_explicit_content_type_and_json_bytes() -> None:
    ev = to_cloudevent(b'{"a": 1}', datacontenttype="application/cloudevents+json")
    assert ev.WhichOneof("data") == "binary_data"
    assert decode_data(ev) == {"a": 1}
    assert decode_data(to_cloudevent("<x/>", datacontenttype="application/xml")) == "<x/>"


def test_attributes_typed() -> None:
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    attrs: dict[str, AttributeValue] = {"s": "v", "n": 5, "b": True, "raw": b"\x01", "when": when}
    ev = to_cloudevent("x", attributes=attrs)
    assert ev.attributes["b"].WhichOneof("attr") == "ce_boolean"
    assert ev.attributes["n"].WhichOneof("attr") == "ce_integer"
    decoded = decode_attributes(ev)
    assert decoded == {**attrs, "datacontenttype": "text/plain"}
    with pytest.raises(ValueError, match="32 bits"):
        to_cloudevent("x", attributes={"n": 2**40})


def test_ready_cloudevent_passes_through_or_is_completed() -> None:
    full = to_cloudevent("x")
    assert to_cloudevent(full) is full
    partial = cloudevent_pb2.CloudEvent(text_data="y")
    done = complete_cloudevent(partial, type="t", source="src")
    assert (done.type, done.source, done.spec_version) == ("t", "src", "1.0")
    assert done.id and not partial.id


def test_empty_event_decodes_to_none() -> None:
    assert decode_data(cloudevent_pb2.CloudEvent()) is None


def test_start_positions() -> None:
    assert to_start_position(None) is None
    new, every = to_start_position("new"), to_start_position("ALL")
    assert new is not None and new.policy == broker_pb2.START_POLICY_NEW
    assert every is not None and every.policy == broker_pb2.START_POLICY_ALL
    after = to_start_position(42)
    assert after is not None
    assert (after.policy, after.after_id) == (broker_pb2.START_POLICY_AFTER_ID, 42)
    tup = to_start_position(("after", 7))
    assert tup is not None and tup.after_id == 7
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    since = to_start_position(when)
    assert since is not None and since.since_time.ToDatetime(tzinfo=dt.UTC) == when
    delta = to_start_position(dt.timedelta(hours=1))
    assert delta is not None
    ago = dt.datetime.now(dt.UTC) - delta.since_time.ToDatetime(tzinfo=dt.UTC)
    assert dt.timedelta(minutes=59) < ago < dt.timedelta(minutes=61)
    for bad in ("later", -1, ("before", 1)):
        with pytest.raises(ValueError):
            to_start_position(bad)


def test_durations() -> None:
    assert to_duration(1.5).ToNanoseconds() == 1_500_000_000
    assert to_duration(dt.timedelta(seconds=2)).ToSeconds() == 2
