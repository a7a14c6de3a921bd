"""The CloudEvents attribute rules (broker/cloudevents.py): pure, no server."""

from __future__ import annotations

import pytest

from lockgate.broker.cloudevents import (
    MAX_NAME_LENGTH,
    check_attribute,
    check_attributes,
    check_name,
    is_name,
    is_uri,
    is_uri_reference,
    parse_timestamp,
)
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.v1 import cloudevent_pb2

Value = cloudevent_pb2.CloudEvent.CloudEventAttributeValue


@pytest.mark.parametrize("name", ["a", "123", "traceparent", "x1y2", "a" * MAX_NAME_LENGTH])
def test_valid_names(name: str) -> None:
    assert check_name(name) is None


@pytest.mark.parametrize(
    "name",
    ["", "ü", "Ab", "a-b", "a_b", "a b", "a" * (MAX_NAME_LENGTH + 1), "id", "data", "type"],
)
def test_invalid_names(name: str) -> None:
    err = check_name(name)
    assert isinstance(err, InvalidEvent) and err.reason == "INVALID_EVENT" and err.hint


@pytest.mark.parametrize("name", ["lockgate", "lockgateroutedfrom", "lockgateoriginalsubject"])
def test_broker_names_are_refused(name: str) -> None:
    assert is_name(name)  # a valid name (the broker's events carry it out) ...
    err = check_name(name)  # ... that no publisher may set
    assert isinstance(err, InvalidEvent) and err.reason == "INVALID_EVENT"
    assert err.metadata == {"attribute": name} and "lockgate" in err.hint
    value = Value(ce_string="orders")
    assert check_attributes({"note": Value(ce_string="x"), name: value}) is not None
    assert check_name("lockgat") is None and check_name("xlockgate") is None


def test_uris() -> None:
    assert is_uri("https://example.com/a?b=c#d") and is_uri("urn:uuid:1234")
    assert not is_uri("/relative") and not is_uri("no scheme") and not is_uri("ht tp://x")
    assert not is_uri("https://x/%zz") and not is_uri("https://ü.example")
    assert is_uri_reference("/relative/path") and is_uri_reference("https://x")
    assert is_uri_reference("") and not is_uri_reference("a b") and not is_uri_reference("1a:b")


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01T12:00:00", "10000-01-01T00:00:00Z"]
)
def test_parse_timestamp_refuses(text: str) -> None:
    with pytest.raises(InvalidEvent):
        parse_timestamp(text)


def test_parse_timestamp_bounds() -> None:
    assert parse_timestamp("0001-01-01T00:00:00Z").seconds == -62_135_596_800
    assert parse_timestamp("2024-05-01T12:00:00+02:00").seconds == 1_714_557_600


def _value(**kw: object) -> Value:
    v = Value()
    for k, x in kw.items():
        if k == "ts":
            seconds, nanos = x  # type: ignore[misc]
            v.ce_timestamp.seconds, v.ce_timestamp.nanos = seconds, nanos
        else:
            setattr(v, k, x)
    return v


GOOD = [
    ("flag", _value(ce_boolean=True)),
    ("n", _value(ce_integer=-5)),
    ("raw", _value(ce_bytes=b"\x00")),
    ("note", _value(ce_string="ünïcode is fine")),
    ("link", _value(ce_uri="https://x/y")),
    ("ref", _value(ce_uri_ref="../y")),
    ("time", _value(ts=(0, 999_999_999))),
    ("time", _value(ce_string="2024-05-01T12:00:00Z")),  # the canonical string form
    ("dataschema", _value(ce_uri="https://x/s.json")),
    ("dataschema", _value(ce_string="https://x/s.json")),
    ("datacontenttype", _value(ce_string="application/json; charset=utf-8")),
    ("subject", _value(ce_string="invoice 7")),
]

BAD = [
    ("time", _value(ts=(0, 1_000_000_000)), "nanoseconds"),
    ("time", _value(ts=(0, -1)), "nanoseconds"),
    ("time", _value(ts=(253_402_300_800, 0)), "seconds"),
    ("when", _value(ts=(-62_135_596_801, 0)), "seconds"),
    ("time", _value(ce_string="yesterday"), "RFC 3339"),
    ("time", _value(ce_integer=5), "not a Timestamp"),
    ("dataschema", _value(ce_uri="not a uri"), "absolute URI"),
    ("dataschema", _value(ce_boolean=True), "not a URI"),
    ("link", _value(ce_uri="/relative"), "absolute URI"),
    ("ref", _value(ce_uri_ref="a b"), "URI-reference"),
    ("datacontenttype", _value(ce_integer=1), "not a String"),
    ("datacontenttype", _value(ce_string="json"), "media type"),
    ("subject", _value(ce_bytes=b"x"), "not a String"),
    ("note", _value(ce_string="line\nbreak"), "U+000A"),
    ("note", _value(ce_string="del\x7f"), "U+007F"),
    ("note", _value(ce_string="\ufffe"), "U+FFFE"),
    ("note", _value(), "no value"),
]


@pytest.mark.parametrize(("name", "value"), GOOD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(GOOD)])
def test_valid_values(name: str, value: Value) -> None:
    assert check_attribute(name, value) is None


@pytest.mark.parametrize(
    ("name", "value", "words"), BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)]
)
def test_invalid_values(name: str, value: Value, words: str) -> None:
    err = check_attribute(name, value)
    assert isinstance(err, InvalidEvent) and err.reason == "INVALID_EVENT"
    assert words in err.message and err.metadata["attribute"] == name and err.hint


def test_check_attributes_reports_the_first_problem() -> None:
    ev = cloudevent_pb2.CloudEvent()
    assert check_attributes(ev.attributes) is None
    ev.attributes["ok"].ce_string = "fine"
    ev.attributes["time"].ce_timestamp.nanos = -3
    err = check_attributes(ev.attributes)
    assert err is not None and err.metadata["attribute"] == "time"


def test_a_string_found_valid_once_is_not_checked_again_and_masks_nothing() -> None:
    good = {"datacontenttype": Value(ce_string="application/x-cached")}
    assert check_attributes(good) is None
    assert check_attributes(good) is None  # from the cache of valid (name, string) pairs
    # The same name with a value of another kind is checked in full.
    bad_kind = {"datacontenttype": Value(ce_integer=3)}
    assert check_attributes(bad_kind) is not None
    # A refused string is never cached: refused every time.
    bad = {"datacontenttype": Value(ce_string="not a media type")}
    for _ in range(2):
        err = check_attributes(bad)
        assert err is not None and err.metadata["attribute"] == "datacontenttype"
