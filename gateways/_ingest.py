"""What the ingest gateways (Redis, NATS) share: entries to events, and dead-letter records.

An entry is JSON: either a structured CloudEvent (it has ``specversion``) or
``{"data": <any JSON>, "id"?: str, "source"?: str, "type"?: str}``, from which the gateway
builds a CloudEvent (``datacontenttype: application/json``; defaults for id, source and type
come from where the entry was read, so a re-read entry keeps its id and is deduplicated).

:func:`encode_entry` gives the same event as :func:`parse_entry` in its wire form: the plain
entries (string attributes, JSON or text data) are encoded from their JSON straight to
protobuf bytes for the publish request (``clients._wire.encode_publish_request``), because
building a ``CloudEvent`` message per entry cost about 5 µs, most of a gateway's time per
event; any other entry goes through :func:`parse_entry` and is serialised.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from lockgate.broker.api import CloudEvent
from lockgate.broker.cloudevents import set_from_text
from lockgate.broker.errors import BrokerError, InvalidEvent
from lockgate.broker.wire import encode_varint, length_delimited
from lockgate.gateways._cejson import check_extension_name, event_from_json, is_json_type
from lockgate.gateways._json import dumpb, dumps, loads

__all__ = [
    "dead_letter_record",
    "encode_entry",
    "encode_event_json",
    "parse_entry",
    "shorthand_event",
]

_SHORTHAND = {"data", "id", "source", "type"}


def parse_entry(raw: bytes | str, default_id: str, source: str, type_: str) -> CloudEvent:
    """The event of one entry; raises a :class:`BrokerError` (MALFORMED_JSON, INVALID_EVENT)."""
    return _event_of(loads(raw), default_id, source, type_)


def encode_entry(raw: bytes | str, default_id: str, source: str, type_: str) -> bytes:
    """The ``CloudEvent`` wire bytes of the event :func:`parse_entry` makes of ``raw``; raises
    the same errors."""
    doc = loads(raw)
    if type(doc) is dict:
        if "specversion" in doc:
            return encode_event_json(doc)
        try:
            wire = _shorthand_wire(doc, default_id, source, type_)
        except UnicodeEncodeError:  # a lone surrogate: parse_entry says so
            wire = None
        if wire is not None:
            return wire
    return _event_of(doc, default_id, source, type_).SerializeToString()


def encode_event_json(doc: object) -> bytes:
    """The wire bytes of ``event_from_json(doc)`` (a structured-mode CloudEvent); raises what
    it raises."""
    if type(doc) is dict:
        try:
            wire = _structured_wire(doc)
        except UnicodeEncodeError:  # a lone surrogate: event_from_json says so
            wire = None
        if wire is not None:
            return wire
    return event_from_json(doc).SerializeToString()


def _event_of(doc: object, default_id: str, source: str, type_: str) -> CloudEvent:
    if not isinstance(doc, dict):
        raise InvalidEvent(
            f"the entry is a JSON {type(doc).__name__}, not an object",
            reason="INVALID_EVENT",
            hint='send a CloudEvent (structured JSON) or {"data": ...}',
        )
    if "specversion" in doc:
        return event_from_json(doc)
    if "data" not in doc or set(doc) - _SHORTHAND:
        extra = sorted(set(doc) - _SHORTHAND)
        raise InvalidEvent(
            'the entry is neither a CloudEvent (no specversion) nor {"data": ...}'
            + (f" (unexpected {', '.join(extra[:3])})" if extra else ""),
            reason="INVALID_EVENT",
            hint='send a CloudEvent (structured JSON) or {"data": ..., "type"?: ...}',
        )
    return shorthand_event(doc, default_id, source, type_)


def shorthand_event(
    doc: Mapping[str, object], default_id: str, source: str, type_: str
) -> CloudEvent:
    """The event of ``{"data": ..., "id"?, "source"?, "type"?}`` (JSON data; the defaults
    fill what is missing); raises :class:`InvalidEvent` for text with no UTF-8 form."""
    try:
        ev = CloudEvent(
            id=str(doc.get("id") or default_id),
            source=str(doc.get("source") or source),
            spec_version="1.0",
            type=str(doc.get("type") or type_),
        )
        ev.attributes["datacontenttype"].ce_string = "application/json"
        ev.text_data = dumps(doc["data"])
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") cannot be stored as UTF-8
        raise InvalidEvent(
            "the entry holds a lone UTF-16 surrogate (an invalid \\u escape)",
            reason="INVALID_EVENT",
            hint="send valid Unicode text",
        ) from None
    return ev


def dead_letter_record(origin: str, raw: bytes | str, err: BrokerError) -> str:
    """The JSON line a dead-letter list keeps for a refused entry."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return dumps(
        {
            "reason": err.reason,
            "message": err.message,
            "hint": err.hint,
            "origin": origin,
            "time_ms": int(time.time() * 1000),
            "entry": text,
        }
    )


# -- encode_entry's wire form: CloudEvent id=1 source=2 spec_version=3 type=4 attributes=5
# (map entries: key=1 value=2) text_data=7 ---------------------------------------------------

_HEAD = {
    "id": (0, b"\x0a"),
    "source": (1, b"\x12"),
    "specversion": (2, b"\x1a"),
    "type": (3, b"\x22"),
}
"""The required attributes: their place in field order and their tag."""
_ATTRIBUTES: dict[tuple[str, str], bytes] = {}
"""Attribute fields by (name, value): a producer sends the same few (datacontenttype)."""
_ATTRIBUTES_MAX = 4096
_JSON_CONTENT = length_delimited(
    b"\x2a",
    length_delimited(b"\x0a", b"datacontenttype")
    + length_delimited(b"\x12", length_delimited(b"\x1a", b"application/json")),
)
_PLAIN = frozenset(("specversion", "id", "source", "type", "datacontenttype", "data"))
_SHARED: dict[tuple[object, ...], tuple[bytes, bool]] = {}
"""The encoded attributes of plain events but their id, and whether their data is JSON, by
(source, specversion, type, datacontenttype)."""
_SPEC_1_0 = length_delimited(b"\x1a", b"1.0")


def _field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + encode_varint(len(raw)) + raw if raw else b""


def _attribute(name: str, value: str) -> bytes:
    """One ``attributes`` map entry, in the type ``set_from_text`` gives the attribute."""
    key = (name, value)
    field = _ATTRIBUTES.get(key)
    if field is None:
        check_extension_name(name)
        typed = CloudEvent.CloudEventAttributeValue()
        set_from_text(typed, name, value)
        entry = length_delimited(b"\x0a", name.encode())
        field = length_delimited(
            b"\x2a", entry + length_delimited(b"\x12", typed.SerializeToString())
        )
        if len(_ATTRIBUTES) >= _ATTRIBUTES_MAX:  # per-event values (time): stay bounded
            _ATTRIBUTES.clear()
        _ATTRIBUTES[key] = field
    return field


def _structured_wire(doc: dict[str, object]) -> bytes | None:
    """A structured CloudEvent whose attributes are all strings, encoded as
    :func:`event_from_json` would make it; None for any other (``data_base64``, integer or
    boolean extensions, attributes that are not strings): the general path takes those."""
    if doc.keys() <= _PLAIN:
        return _plain_wire(doc)
    head = _head_wire(doc)
    if head is None:
        return None
    ctype = doc.get("datacontenttype")
    json_data = is_json_type(ctype if type(ctype) is str else "")
    data = doc.get("data")
    if data is None:
        return head
    body = data.encode() if type(data) is str and not json_data else dumpb(data)
    return b"".join((head, b"\x3a", encode_varint(len(body)), body))


def _plain_wire(doc: dict[str, object]) -> bytes | None:
    """:func:`_structured_wire` of the usual entry: the required attributes, a content type
    and data. It shares all but its id and data with the entries before it: that part is
    encoded once (``_SHARED``)."""
    get = doc.get
    key = (get("source"), get("specversion"), get("type"), get("datacontenttype"))
    try:
        shared = _SHARED.get(key)
    except TypeError:  # unhashable: a list or an object where a string belongs
        return None
    if shared is None:
        common = _head_wire({k: v for k, v in doc.items() if k != "id" and k != "data"})
        if common is None:
            return None
        ctype = key[3]
        shared = _SHARED[key] = (common, is_json_type(ctype if type(ctype) is str else ""))
        if len(_SHARED) > _ATTRIBUTES_MAX:
            _SHARED.clear()
    id_, data = get("id"), get("data")
    if type(id_) is str and id_:
        raw_id = id_.encode()
        parts = [b"\x0a", encode_varint(len(raw_id)), raw_id, shared[0]]
    elif not id_ and (id_ is None or type(id_) is str):
        parts = [shared[0]]
    else:
        return None
    if data is not None:
        body = data.encode() if type(data) is str and not shared[1] else dumpb(data)
        parts += (b"\x3a", encode_varint(len(body)), body)
    return b"".join(parts)


def _head_wire(doc: dict[str, object]) -> bytes | None:
    """Every attribute of ``doc`` (all but its data) in field order; None unless all are
    strings (or null) and there is no ``data_base64``."""
    if "data_base64" in doc:
        return None
    head = [b"", b"", b"", b""]
    attributes: list[bytes] = []
    for name, value in doc.items():
        if value is None or name == "data":
            continue
        if type(value) is not str:
            return None
        slot = _HEAD.get(name)
        if slot is not None:
            head[slot[0]] = _field(slot[1], value)
        else:
            attributes.append(_attribute(name, value))
    return b"".join((*head, *attributes))


def _shorthand_wire(
    doc: dict[str, object], default_id: str, source: str, type_: str
) -> bytes | None:
    """``{"data": ...}`` with string (or no) id, source and type, encoded as
    :func:`shorthand_event` would make it; None for any other entry."""
    if "data" not in doc or not doc.keys() <= _SHORTHAND:
        return None
    id_, src, typ = (
        doc.get("id") or default_id,
        doc.get("source") or source,
        doc.get("type") or type_,
    )
    if type(id_) is not str or type(src) is not str or type(typ) is not str:
        return None
    body = dumpb(doc["data"])
    return b"".join(
        (
            _field(b"\x0a", id_),
            _field(b"\x12", src),
            _SPEC_1_0,
            _field(b"\x22", typ),
            _JSON_CONTENT,
            b"\x3a",
            encode_varint(len(body)),
            body,
        )
    )
