"""Pure conversions between Python values and CloudEvents: no I/O, no server, no event loop.

Encoding picks the payload field and ``datacontenttype`` from the value's type:

==========================================  ===============  ============================
value                                       payload field    datacontenttype
==========================================  ===============  ============================
``bytes`` / ``bytearray`` / ``memoryview``  ``binary_data``  ``application/octet-stream``
``str``                                     ``text_data``    ``text/plain``
JSON value (dict, list, int, float, ...)    ``text_data``    ``application/json``
pydantic ``BaseModel``                      ``text_data``    ``application/json``
dataclass instance                          ``text_data``    ``application/json``
==========================================  ===============  ============================

Decoding reverses it: JSON content types give Python values, other text gives ``str``, binary
gives ``bytes``; with ``model=`` the value is validated into a pydantic model or a dataclass.

Example::

    ev = to_cloudevent({"total": 10}, type="invoice.created", source="agent://a", id="1")
    assert decode_data(ev) == {"total": 10}
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import json.encoder
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar, cast, overload

from google.protobuf import duration_pb2, timestamp_pb2

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

__all__ = [
    "AttributeValue",
    "StartSpec",
    "decode_attributes",
    "decode_data",
    "default_source",
    "dumps_json",
    "encode_payload",
    "fill_cloudevent",
    "new_event_id",
    "to_cloudevent",
    "to_duration",
    "to_start_position",
    "to_timestamp",
]

T = TypeVar("T")

AttributeValue = str | int | bool | bytes | dt.datetime
"""The Python types of CloudEvents extension attributes."""

StartSpec = str | int | dt.datetime | dt.timedelta | tuple[str, int]
"""Where a subscription starts: "new", "all", a datetime, a timedelta (since now minus it),
an id (or ``("after", id)``) to start after."""

CloudEvent = cloudevent_pb2.CloudEvent
_AttrValue = cloudevent_pb2.CloudEvent.CloudEventAttributeValue

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"
APPLICATION_JSON = "application/json"
SPEC_VERSION = "1.0"
_INT32 = (-(2**31), 2**31 - 1)
type_ = type  # the builtin, since parameters named ``type`` (the CloudEvents attribute) shadow it


def default_source() -> str:
    """The default ``source`` attribute: ``lockgate://client/<hostname>/<pid>``."""
    return f"lockgate://client/{socket.gethostname()}/{os.getpid()}"


def new_event_id() -> str:
    """A fresh random event id (32 hex digits, as ``uuid4().hex`` but cheaper)."""
    return os.urandom(16).hex()


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_basestring = getattr(json.encoder, "c_encode_basestring", None)
# The C encoder, built once: json.dumps with custom options builds one per call (~1 µs).
# No circular check (markers=None): a cyclic value fails with RecursionError instead.
_C_ENCODER: Callable[[object, int], Iterable[str]] | None = (
    _make_c_encoder(None, _json_default, _c_basestring, None, ":", ",", False, False, True)
    if _make_c_encoder is not None and _c_basestring is not None
    else None
)


def dumps_json(value: object) -> str:
    """Compact JSON of ``value`` as the client encodes payloads (datetimes, UUIDs, enums,
    bytes, sets, dataclasses and pydantic models included)."""
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    try:
        return "".join(_C_ENCODER(value, 0))
    except RecursionError:
        raise ValueError("cannot encode a value that contains itself as JSON") from None


def encode_payload(data: object) -> tuple[str | bytes, str]:
    """The payload and its content type: a ``str`` goes to ``text_data``, bytes to ``binary_data``.

    >>> encode_payload({"a": 1})
    ('{"a":1}', 'application/json')
    """
    cls = type_(data)
    if cls is dict or cls is list:  # the common case first
        return dumps_json(data), APPLICATION_JSON
    if cls is str:
        return data, TEXT_PLAIN  # type: ignore[return-value]
    if cls is bytes:
        return data, OCTET_STREAM  # type: ignore[return-value]
    if isinstance(data, str):
        return data, TEXT_PLAIN
    if isinstance(data, bytes):
        return data, OCTET_STREAM
    if isinstance(data, bytearray | memoryview):
        return bytes(data), OCTET_STREAM
    if _is_pydantic_model(data):
        return data.model_dump_json(), APPLICATION_JSON  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(data) and not isinstance(data, type_):
        return dumps_json(dataclasses.asdict(data)), APPLICATION_JSON
    return dumps_json(data), APPLICATION_JSON


def _is_pydantic_model(value: object) -> bool:
    # pydantic is optional: if it was never imported, no value can be one of its models.
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _set_attribute(target: _AttrValue, value: AttributeValue) -> None:
    if isinstance(value, bool):
        target.ce_boolean = value
    elif isinstance(value, int):
        if not _INT32[0] <= value <= _INT32[1]:
            raise ValueError(f"integer attribute {value} does not fit in 32 bits")
        target.ce_integer = value
    elif isinstance(value, str):
        target.ce_string = value
    elif isinstance(value, bytes):
        target.ce_bytes = value
    elif isinstance(value, dt.datetime):
        target.ce_timestamp.CopyFrom(to_timestamp(value))
    else:
        raise TypeError(f"attribute values are str, int, bool, bytes or datetime, not {value!r}")


def fill_cloudevent(
    event: CloudEvent,
    data: object,
    *,
    type: str,
    source: str,
    id: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    datacontenttype: str | None = None,
) -> int:
    """Fill an empty ``event`` in place (so batches build events without copying).

    Returns the payload's size in bytes, an estimate of the event's encoded size.
    """
    event.id = id
    event.source = source
    event.spec_version = SPEC_VERSION
    event.type = type
    payload, content_type = encode_payload(data)
    if isinstance(payload, str):
        event.text_data = payload
    else:
        event.binary_data = payload
    size = len(payload)
    attrs = event.attributes
    attrs["datacontenttype"].ce_string = datacontenttype or content_type
    if attributes:
        for key, value in attributes.items():
            _set_attribute(attrs[key], value)
            size += len(key) + 8
    return size + len(id) + len(source) + len(type) + 48


def to_cloudevent(
    data: object,
    *,
    type: str = "lockgate.event",
    source: str | None = None,
    id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    datacontenttype: str | None = None,
) -> CloudEvent:
    """Build a CloudEvent carrying ``data``; a ready ``CloudEvent`` passes through, completed.

    >>> ev = to_cloudevent("hi", type="greeting", source="agent://a", id="1")
    >>> ev.text_data, ev.attributes["datacontenttype"].ce_string
    ('hi', 'text/plain')
    """
    if isinstance(data, CloudEvent):
        return complete_cloudevent(data, type=type, source=source)
    event = CloudEvent()
    fill_cloudevent(
        event,
        data,
        type=type,
        source=source or default_source(),
        id=id or new_event_id(),
        attributes=attributes,
        datacontenttype=datacontenttype,
    )
    return event


def complete_cloudevent(
    event: CloudEvent, *, type: str = "lockgate.event", source: str | None = None
) -> CloudEvent:
    """``event`` itself if it has every required attribute, else a completed copy."""
    if event.id and event.source and event.spec_version and event.type:
        return event
    copy = CloudEvent()
    copy.CopyFrom(event)
    copy.id = copy.id or new_event_id()
    copy.source = copy.source or source or default_source()
    copy.spec_version = copy.spec_version or SPEC_VERSION
    copy.type = copy.type or type
    return copy


def content_type(event: CloudEvent) -> str:
    """The event's ``datacontenttype`` attribute, or ``""``."""
    value = event.attributes.get("datacontenttype")
    return value.ce_string if value is not None else ""


_JSON_TYPES: dict[str, bool] = {}


def _is_json(ctype: str) -> bool:
    # Cached: a subscriber sees a handful of content types, and this runs per decoded event.
    known = _JSON_TYPES.get(ctype)
    if known is None:
        base = ctype.split(";", 1)[0].strip().lower()
        known = base == APPLICATION_JSON or base.endswith("+json") or base == "text/json"
        if len(_JSON_TYPES) < 1024:
            _JSON_TYPES[ctype] = known
    return known


@overload
def decode_data(event: CloudEvent, model: None = None) -> object: ...
@overload
def decode_data(event: CloudEvent, model: type[T]) -> T: ...
def decode_data(event: CloudEvent, model: type[T] | None = None) -> object:
    """Decode the payload: JSON to Python values, other text to ``str``, binary to ``bytes``.

    With ``model`` (a pydantic model class or a dataclass) the payload is validated into it.

    >>> decode_data(to_cloudevent([1, 2], source="s", id="1"))
    [1, 2]
    """
    kind = event.WhichOneof("data")
    if model is not None:
        return _to_model(event, kind, model)
    if kind == "text_data" or kind == "binary_data":
        data = getattr(event, kind)
        ctype = event.attributes.get("datacontenttype")
        if ctype is not None and _is_json(ctype.ce_string):
            return json.loads(data)
        return data
    if kind == "proto_data":
        return event.proto_data
    return None


def _to_model(event: CloudEvent, kind: str | None, model: type[T]) -> T:
    raw: str | bytes = event.text_data if kind == "text_data" else event.binary_data
    validate_json = getattr(model, "model_validate_json", None)
    if callable(validate_json):  # a pydantic model
        return cast(T, validate_json(raw))
    value = json.loads(raw) if raw else None
    if dataclasses.is_dataclass(model):
        if not isinstance(value, dict):
            raise TypeError(f"{model.__name__} needs a JSON object, got {type_(value).__name__}")
        return model(**value)
    return model(value)  # type: ignore[call-arg]


def decode_attributes(event: CloudEvent) -> dict[str, AttributeValue]:
    """The event's optional and extension attributes as Python values."""
    out: dict[str, AttributeValue] = {}
    for key, value in event.attributes.items():
        kind = value.WhichOneof("attr")
        if kind == "ce_timestamp":
            out[key] = value.ce_timestamp.ToDatetime(tzinfo=dt.UTC)
        elif kind is not None:
            out[key] = getattr(value, kind)
    return out


def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def to_duration(seconds: float | dt.timedelta) -> duration_pb2.Duration:
    """A protobuf Duration from seconds or a timedelta."""
    d = duration_pb2.Duration()
    if isinstance(seconds, dt.timedelta):
        d.FromTimedelta(seconds)
    else:
        d.FromNanoseconds(round(seconds * 1e9))
    return d


def to_start_position(start: StartSpec | None) -> broker_pb2.StartPosition | None:
    """The wire form of a subscription's start.

    >>> to_start_position("all").policy == broker_pb2.START_POLICY_ALL
    True
    """
    if start is None:
        return None
    if isinstance(start, str):
        policies = {"new": broker_pb2.START_POLICY_NEW, "all": broker_pb2.START_POLICY_ALL}
        if start.lower() not in policies:
            raise ValueError(f"start must be 'new', 'all', a time or an id, not {start!r}")
        return broker_pb2.StartPosition(policy=policies[start.lower()])
    if isinstance(start, dt.datetime):
        return broker_pb2.StartPosition(
            policy=broker_pb2.START_POLICY_SINCE_TIME, since_time=to_timestamp(start)
        )
    if isinstance(start, dt.timedelta):
        since = dt.datetime.now(dt.UTC) - start
        return broker_pb2.StartPosition(
            policy=broker_pb2.START_POLICY_SINCE_TIME, since_time=to_timestamp(since)
        )
    if isinstance(start, tuple):
        word, after = start
        if word != "after":
            raise ValueError(f"a tuple start must be ('after', id), not {start!r}")
        start = after
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_AFTER_ID, after_id=start)
    raise ValueError(f"unsupported start {start!r}")
