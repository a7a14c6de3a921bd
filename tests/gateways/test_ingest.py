"""``encode_entry`` is ``parse_entry`` in wire form: the same event (compared as decoded
messages: map order may differ byte for byte) or the same error, for plain entries (encoded
from their JSON) and for the others (built as messages)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.broker.errors import BrokerError
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.gateways._cejson import event_from_json
from lockgate.gateways._ingest import encode_entry, encode_event_json, parse_entry
from lockgate.gateways._json import loads

CloudEvent = cloudevent_pb2.CloudEvent

CE = {"specversion": "1.0", "id": "e1", "source": "/s", "type": "t"}

ENTRIES: list[bytes | str] = [
    json.dumps({**CE, "datacontenttype": "application/json", "data": {"i": 1, "f": 2.50}}),
    json.dumps({**CE, "datacontenttype": "text/plain", "data": "héllo"}),
    json.dumps({**CE, "datacontenttype": "application/cloudevents+json", "data": "quoted"}),
    json.dumps({**CE, "data": "no content type: JSON"}),
    json.dumps({**CE, "data": ""}),
    json.dumps({**CE, "datacontenttype": "text/plain", "data": ""}),
    json.dumps({**CE, "time": "2024-01-01T00:00:00Z", "dataschema": "http://x/y", "subject": "s"}),
    json.dumps({**CE, "myext": "", "id": "", "data": None}),
    json.dumps({**CE, "n": 5, "b": True, "big": 2**40}),
    json.dumps({**CE, "data": 1, "data_base64": None}),
    json.dumps({**CE, "data_base64": "aGk="}),
    json.dumps({**CE, "id": 5}),
    json.dumps({**CE, "id": 0, "data": 1}),
    json.dumps({**CE, "id": "", "data": 1}),
    json.dumps({**CE, "id": None, "data": "x", "datacontenttype": "text/plain"}),
    json.dumps({**CE, "type": ["t"]}),
    json.dumps({**CE, "datacontenttype": {"a": 1}, "data": "x"}),
    json.dumps({**CE, "Bad-Name": "x"}),
    json.dumps({**CE, "time": "yesterday"}),
    json.dumps({"data": {"a": [1, 2.5, 123456789012345678901234567890]}}),
    json.dumps({"data": None, "id": "x", "type": "t", "source": "s"}),
    json.dumps({"data": 1, "id": 7}),
    json.dumps({"data": 1, "id": ""}),
    json.dumps({"data": 1, "zz": 7}),
    json.dumps({"nope": 1}),
    b"[1]",
    b"{bad",
    b'{"data": "\\ud800"}',
    b'{"specversion": "1.0", "id": "\\ud800"}',
    b'{"data": NaN}',
    '{"data": "\u00e9"}',
]


def outcome(make: object) -> CloudEvent | tuple[str, str, str]:
    try:
        result = make()  # type: ignore[operator]
    except BrokerError as err:
        return (type(err).__name__, err.reason, err.message)
    return result if isinstance(result, CloudEvent) else CloudEvent.FromString(result)


def same(raw: bytes | str) -> None:
    want = outcome(lambda: parse_entry(raw, "dflt", "redis://k", "lockgate.t"))
    got = outcome(lambda: encode_entry(raw, "dflt", "redis://k", "lockgate.t"))
    assert got == want, raw


@pytest.mark.parametrize("raw", ENTRIES)
def test_the_wire_form_is_the_event_or_the_error_of_parse_entry(raw: bytes | str) -> None:
    same(raw)


@pytest.mark.parametrize("raw", [e for e in ENTRIES if b"specversion" in str(e).encode()])
def test_structured_events_encode_as_event_from_json_builds_them(raw: bytes | str) -> None:
    """The NATS gateway's structured mode: ``encode_event_json`` is ``event_from_json``."""
    try:
        doc = loads(raw)
    except BrokerError:
        return
    want = outcome(lambda: event_from_json(doc))
    assert outcome(lambda: encode_event_json(doc)) == want


def test_entries_that_share_all_but_id_and_data_stay_apart() -> None:
    """The encoded shared part is keyed by source, type and content type: a change in any
    of them is a different event."""
    for ctype in ("application/json", "text/plain", None):
        for source in ("/a", "/b"):
            same(json.dumps({**CE, "source": source, "datacontenttype": ctype, "data": "x"}))


text = st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
attribute_names = st.sampled_from(
    [
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "subject",
        "time",
        "data",
        "data_base64",
        "ext",
        "Bad",
    ]
)
attribute_values = st.none() | text | st.sampled_from(["application/json", "text/plain"])


# the machine is shared: generating nested JSON may take longer than hypothesis likes
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(attribute_names, attribute_values | json_values, max_size=7))
def test_any_object_encodes_as_parse_entry_builds_it(doc: dict[str, object]) -> None:
    same(json.dumps(doc))
    same(json.dumps({**doc, "specversion": "1.0"}))
