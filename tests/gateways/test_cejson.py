"""The CloudEvents JSON format and binary mode codecs: pure, no server."""

from __future__ import annotations

import base64

import pytest

from lockgate.broker.errors import InvalidEvent
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.gateways._cebinary import from_binary, to_binary
from lockgate.gateways._cejson import event_from_json, event_to_json, is_json_type

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
        {**BASE, "ü": "x"},  # lower case, but not a-z
        {**BASE, "a" * 65: "x"},
        {**BASE, "data": "\ud800"},  # a lone surrogate has no UTF-8 form
        {**BASE, "ext": "\udc00"},
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
    assert headers["ce-id"] == "a%20%22quoted%22%20100%25%20%C3%BCnicode%20id"
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


def test_extension_names_follow_the_spec() -> None:
    ev = event_from_json({**BASE, "123": "digits only", "a" * 64: 1})
    assert ev.attributes["123"].ce_string == "digits only"
    assert ev.attributes["a" * 64].ce_integer == 1


def test_header_values_keep_leading_and_trailing_spaces() -> None:
    ev = cloudevent_pb2.CloudEvent(id=" 1 ", source="s", spec_version="1.0", type="t")
    ev.attributes["note"].ce_string = " padded "
    headers, _ = to_binary(ev)
    assert headers["ce-note"] == "%20padded%20" and headers["ce-id"] == "%201%20"
    back = from_binary(headers, b"")
    assert back.id == " 1 " and back.attributes["note"].ce_string == " padded "


def test_quoted_header_values_are_unescaped_then_percent_decoded() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": '"a \\"b\\" c"',  # the quoted-string "a \"b\" c"
        "ce-source": '"/x%20y"',
        "ce-type": "t",
    }
    ev = from_binary(headers, b"")
    assert ev.id == 'a "b" c' and ev.source == "/x y"


@pytest.mark.parametrize("value", ["%C0%A0", "%FF", "abc%E2%82"])
def test_percent_encoded_invalid_utf8_is_refused(value: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
    with pytest.raises(InvalidEvent) as info:
        from_binary({**headers, "ce-note": value}, b"")
    assert info.value.reason == "INVALID_EVENT" and "UTF-8" in info.value.message


def test_no_content_type_is_invented() -> None:
    ev = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    ev.binary_data = b"\x00"
    headers, body = to_binary(ev)
    assert "content-type" not in headers and body == b"\x00"
    assert "datacontenttype" not in from_binary(headers, body).attributes


def test_nats_binding_puts_the_content_type_in_a_ce_header() -> None:
    ev = event_from_json({**BASE, "datacontenttype": "application/json; charset=utf-8"})
    headers, _ = to_binary(ev, "nats")
    assert "content-type" not in headers
    assert headers["ce-datacontenttype"] == "application/json;%20charset=utf-8"
    back = from_binary(headers, b"{}", "nats")
    assert back.attributes["datacontenttype"].ce_string == "application/json; charset=utf-8"
    assert back.text_data == "{}"


def test_an_unencodable_event_raises_value_error() -> None:
    ev = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    ev.attributes["time"].ce_timestamp.nanos = 2_000_000_000
    with pytest.raises(ValueError):
        to_binary(ev)
    with pytest.raises(ValueError):
        event_to_json(ev)


def test_an_entry_with_a_lone_surrogate_is_an_invalid_event() -> None:
    from lockgate.gateways._ingest import parse_entry

    with pytest.raises(InvalidEvent):
        parse_entry('{"data": "\\ud800"}', "id", "/s", "t")
