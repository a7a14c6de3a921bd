"""The CloudEvents JSON format and binary mode codecs: pure, no server."""

from __future__ import annotations

import base64

import pytest

from broker.errors import InvalidEvent
from broker.v1 import cloudevent_pb2
from gateways._cebinary import from_binary, to_binary
from gateways._cejson import event_from_json, event_to_json, is_json_type

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


def test_json_data_round_trips() -> None:
    doc = {**BASE, "datacontenttype": "application/json", "data": {"a": [1, 2]}}
    ev = event_from_json(doc)
    assert ev.text_data == '{"a":[1,2]}'
    assert event_to_json(ev) == doc


def test_absent_content_type_means_json() -> None:
    ev = event_from_json({**BASE, "data": "hello"})
    assert ev.text_data == '"hello"'
    assert event_to_json(ev)["data"] == "hello"


def test_text_data_stays_text() -> None:
    doc = {**BASE, "datacontenttype": "text/plain", "data": "hi there"}
    ev = event_from_json(doc)
    assert ev.text_data == "hi there"
    assert event_to_json(ev) == doc


def test_data_base64_is_binary() -> None:
    raw = bytes(range(256))
    doc = {
        **BASE,
        "datacontenttype": "application/octet-stream",
        "data_base64": base64.b64encode(raw).decode(),
    }
    ev = event_from_json(doc)
    assert ev.binary_data == raw
    assert event_to_json(ev) == doc


def test_extension_types_and_time() -> None:
    doc = {
        **BASE,
        "time": "2024-05-01T12:00:00.123456789Z",
        "flag": True,
        "count": 42,
        "big": 2**40,
        "traceparent": "00-x",
        "dataschema": "https://x/s.json",
    }
    ev = event_from_json(doc)
    attrs = ev.attributes
    assert attrs["time"].ce_timestamp.nanos == 123456789
    assert attrs["flag"].ce_boolean is True and attrs["count"].ce_integer == 42
    assert attrs["big"].ce_string == str(2**40)  # beyond int32: kept as a string
    assert attrs["dataschema"].ce_uri == "https://x/s.json"
    out = event_to_json(ev)
    assert out["time"] == "2024-05-01T12:00:00.123456789Z"
    assert out["flag"] is True and out["count"] == 42 and "data" not in out


def test_bytes_attribute_and_proto_data_encode() -> None:
    ev = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    ev.attributes["sig"].ce_bytes = b"\x00\x01"
    ev.proto_data.type_url = "type.googleapis.com/x.Y"
    ev.proto_data.value = b"\x08\x01"
    out = event_to_json(ev)
    assert out["sig"] == "AAE=" and out["data_base64"] == "CAE="
    assert out["dataschema"] == "type.googleapis.com/x.Y"


@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        {**BASE, "id": 5},
        {**BASE, "ext": 1.5},
        {**BASE, "ext": {"a": 1}},
        {**BASE, "Bad-Name": "x"},
        {**BASE, "time": "yesterday"},
        {**BASE, "data": 1, "data_base64": "AA=="},
        {**BASE, "data_base64": "%%%"},
    ],
)
def test_invalid_documents(doc: object) -> None:
    with pytest.raises(InvalidEvent) as info:
        event_from_json(doc)
    assert info.value.reason == "INVALID_EVENT" and info.value.hint


def test_missing_required_left_to_the_broker() -> None:
    ev = event_from_json({"specversion": "1.0", "id": "1"})
    assert ev.id == "1" and not ev.type


def test_is_json_type() -> None:
    assert is_json_type("") and is_json_type("application/json; charset=utf-8")
    assert is_json_type("application/vnd.x+json") and not is_json_type("text/plain")


def test_binary_mode_round_trip_with_percent_encoding() -> None:
    ev = event_from_json(
        {
            **BASE,
            "id": 'a "quoted" 100% ünicode id',
            "datacontenttype": "application/json",
            "data": {"k": 1},
            "time": "2024-05-01T12:00:00Z",
            "flag": True,
        }
    )
    headers, body = to_binary(ev)
    assert headers["ce-id"] == "a %22quoted%22 100%25 %C3%BCnicode id"
    assert headers["content-type"] == "application/json" and body == b'{"k":1}'
    back = from_binary(headers, body)
    assert back.id == ev.id and back.text_data == ev.text_data
    assert back.attributes["time"] == ev.attributes["time"]
    assert back.attributes["flag"].ce_string == "true"  # headers carry no type


def test_binary_mode_binary_body() -> None:
    ev = from_binary(
        {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "s",
            "ce-type": "t",
            "Content-Type": "image/png",
        },
        b"\x89PNG",
    )
    assert ev.binary_data == b"\x89PNG"
    with pytest.raises(InvalidEvent):
        from_binary({"ce-specversion": "1.0", "ce-Bad_Name": "x"}, b"")
