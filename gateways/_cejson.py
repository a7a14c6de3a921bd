"""The CloudEvents JSON format (pure): ``CloudEvent`` proto <-> JSON object.

Follows https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md:
context attributes are top-level members, ``data`` holds a JSON value (when
``datacontenttype`` is JSON or absent) or a string (other text), ``data_base64`` holds
binary data, extension attributes are members of their CloudEvents type (boolean, integer,
string; bytes as base64, timestamps as RFC 3339).

Example::

    ev = from_json({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"a": 1}})
    assert to_json(ev)["data"] == {"a": 1}
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from lockgate.broker.cloudevents import check_name, set_from_text
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.gateways._json import dumps, loads
from lockgate.gateways.errors import MalformedJson

__all__ = [
    "JsonValue",
    "attribute_to_json",
    "check_extension_name",
    "event_from_json",
    "event_to_json",
    "is_json_type",
]

CloudEvent = cloudevent_pb2.CloudEvent
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]

_REQUIRED = {"specversion": "spec_version", "id": "id", "source": "source", "type": "type"}
"""The required attributes, by the name of their CloudEvent field."""
_GOOD_NAMES: set[str] = set()
"""Extension names that passed ``check_name``: a publisher sends the same few, every event."""
_GOOD_NAMES_MAX = 4096
_INT32 = (-(2**31), 2**31 - 1)


def is_json_type(content_type: str) -> bool:
    """True for ``application/json``, ``text/json`` and ``*/*+json`` (and no content type)."""
    base = content_type.split(";", 1)[0].strip().lower()
    return not base or base in ("application/json", "text/json") or base.endswith("+json")


def _bad(message: str, hint: str = "") -> InvalidEvent:
    return InvalidEvent(message, reason="INVALID_EVENT", hint=hint or "see the CloudEvents spec")


def event_from_json(doc: object) -> CloudEvent:
    """A ``CloudEvent`` from one structured-mode JSON object; raises :class:`InvalidEvent`.

    Required attributes and attribute values are checked by the broker (reasons
    ``MISSING_ATTRIBUTE``, ``INVALID_EVENT``; ``broker.cloudevents``), not here, so that
    every ingress reports them the same way; this only refuses what has no CloudEvent form.
    """
    try:
        return _event_from_json(doc)
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") cannot be stored as UTF-8
        raise _bad(
            "the event holds a lone UTF-16 surrogate (an invalid \\u escape)",
            "send valid Unicode text",
        ) from None


def _event_from_json(doc: object) -> CloudEvent:
    # `type(x) is ...` first: the isinstance checks cost a microsecond an event at ingest rates
    if type(doc) is not dict and not isinstance(doc, Mapping):
        raise _bad(
            f"a CloudEvent must be a JSON object, not {type(doc).__name__}",
            'send {"specversion": "1.0", "id": ..., "source": ..., "type": ...}',
        )
    ev = CloudEvent()
    for name, value in doc.items():
        if type(name) is not str and not isinstance(name, str):
            raise _bad("attribute names must be strings")
        if name in ("data", "data_base64") or value is None:
            continue
        field = _REQUIRED.get(name)
        if field is not None:
            if type(value) is not str and not isinstance(value, str):
                raise _bad(f"attribute {name!r} must be a string")
            setattr(ev, field, value)
            continue
        _set_attr(ev, name, value)
    if "data" in doc and "data_base64" in doc:
        raise _bad("an event has either data or data_base64, not both")
    if doc.get("data_base64") is not None:
        raw = doc["data_base64"]
        if not isinstance(raw, str):
            raise _bad("data_base64 must be a string")
        try:
            ev.binary_data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("data_base64 is not valid base64") from None
    elif "data" in doc and doc["data"] is not None:
        data = doc["data"]
        ctype = doc.get("datacontenttype")
        ctype = ctype if isinstance(ctype, str) else ""
        if isinstance(data, str) and not is_json_type(ctype):
            ev.text_data = data
        else:
            ev.text_data = dumps(data)
    return ev


def check_extension_name(name: str) -> None:
    """Raises :class:`InvalidEvent` for a name no CloudEvents attribute may have."""
    if name not in _GOOD_NAMES:
        err = check_name(name)
        if err is not None:
            raise err
        if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
            _GOOD_NAMES.add(name)


def _set_attr(ev: CloudEvent, name: str, value: object) -> None:
    check_extension_name(name)
    if type(value) is str:
        set_from_text(ev.attributes[name], name, value)
        return
    if not isinstance(value, bool | int | str):
        raise _bad(
            f"attribute {name!r} has a {type(value).__name__} value",
            "extension attributes are strings, integers or booleans",
        )
    attr = ev.attributes[name]
    if isinstance(value, bool):
        attr.ce_boolean = value
    elif isinstance(value, int):
        if _INT32[0] <= value <= _INT32[1]:
            attr.ce_integer = value
        else:  # beyond the Integer type: kept as its decimal String
            attr.ce_string = str(value)
    else:
        set_from_text(attr, name, value)


def _content_type(ev: CloudEvent) -> str:
    v = ev.attributes.get("datacontenttype")
    return v.ce_string if v is not None else ""


def attribute_to_json(value: CloudEvent.CloudEventAttributeValue) -> bool | int | str:
    kind = value.WhichOneof("attr")
    if kind == "ce_boolean":
        return value.ce_boolean
    if kind == "ce_integer":
        return value.ce_integer
    if kind == "ce_bytes":
        return base64.b64encode(value.ce_bytes).decode("ascii")
    if kind == "ce_timestamp":
        return str(value.ce_timestamp.ToJsonString())
    if kind == "ce_uri":
        return value.ce_uri
    if kind == "ce_uri_ref":
        return value.ce_uri_ref
    return value.ce_string


def event_to_json(ev: CloudEvent) -> dict[str, JsonValue]:
    """The structured-mode JSON object of ``ev`` (``_json.dumps`` it to send)."""
    out: dict[str, JsonValue] = {
        "specversion": ev.spec_version,
        "id": ev.id,
        "source": ev.source,
        "type": ev.type,
    }
    for name, value in ev.attributes.items():
        out[name] = attribute_to_json(value)
    kind = ev.WhichOneof("data")
    if kind == "text_data":
        text = ev.text_data
        if is_json_type(_content_type(ev)):
            try:
                out["data"] = loads(text)  # type: ignore[assignment]
            except MalformedJson:  # JSON declared, text sent: keep the text
                out["data"] = text
        else:
            out["data"] = text
    elif kind == "binary_data":
        out["data_base64"] = base64.b64encode(ev.binary_data).decode("ascii")
    elif kind == "proto_data":
        out["data_base64"] = base64.b64encode(ev.proto_data.value).decode("ascii")
        out.setdefault("dataschema", ev.proto_data.type_url)
        out.setdefault("datacontenttype", "application/protobuf")
    return out
