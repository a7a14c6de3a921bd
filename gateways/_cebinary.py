"""The CloudEvents binary content mode (pure), shared by HTTP, webhooks and NATS.

Attributes travel as ``ce-<name>`` headers (values percent-encoded as the HTTP binding
says), ``datacontenttype`` as ``Content-Type`` and the data as the body. Header values carry
no type, so extensions arrive as strings; ``time`` is parsed as a timestamp.

Example::

    headers, body = to_binary(event)
    same = from_binary(headers, body)
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping

from broker.errors import InvalidEvent
from broker.v1 import cloudevent_pb2
from gateways._cejson import attribute_to_json, is_json_type, parse_time

__all__ = ["from_binary", "has_binary_headers", "to_binary"]

CloudEvent = cloudevent_pb2.CloudEvent
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"%')


def _lower_items(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k.lower(), v) for k, v in items]


def has_binary_headers(headers: Mapping[str, str]) -> bool:
    """True when the message carries ``ce-specversion`` (binary content mode)."""
    return any(k.lower() == "ce-specversion" for k in headers)


def _is_text(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/")
        or (bool(base) and is_json_type(base))
        or base
        in (
            "application/xml",
            "application/x-www-form-urlencoded",
        )
    )


def from_binary(headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes) -> CloudEvent:
    """The event of a binary-mode message; raises :class:`InvalidEvent` on a bad attribute."""
    ev = CloudEvent()
    ctype = ""
    for name, raw in _lower_items(headers):
        if name == "content-type":
            ctype = raw.strip()
            continue
        if not name.startswith("ce-"):
            continue
        attr = name[3:]
        value = urllib.parse.unquote(raw.strip())
        if attr == "specversion":
            ev.spec_version = value
        elif attr in ("id", "source", "type"):
            setattr(ev, attr, value)
        elif not attr.isalnum() or not attr.islower():
            raise InvalidEvent(
                f"header {name!r} names an invalid attribute",
                reason="INVALID_EVENT",
                hint="CloudEvents attribute names are lower-case letters and digits",
            )
        elif attr == "time":
            ev.attributes[attr].ce_timestamp.CopyFrom(parse_time(value))
        elif attr == "dataschema":
            ev.attributes[attr].ce_uri = value
        else:
            ev.attributes[attr].ce_string = value
    if ctype:
        ev.attributes["datacontenttype"].ce_string = ctype
    if body:
        if _is_text(ctype):
            try:
                ev.text_data = body.decode("utf-8")
            except UnicodeDecodeError:
                ev.binary_data = body
        else:
            ev.binary_data = body
    return ev


def to_binary(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Headers (``ce-*`` and ``content-type``) and body for ``ev`` in binary mode."""
    headers = {
        "ce-specversion": ev.spec_version,
        "ce-id": urllib.parse.quote(ev.id, safe=_SAFE),
        "ce-source": urllib.parse.quote(ev.source, safe=_SAFE),
        "ce-type": urllib.parse.quote(ev.type, safe=_SAFE),
    }
    for name, value in ev.attributes.items():
        if name == "datacontenttype":
            headers["content-type"] = value.ce_string
            continue
        v = attribute_to_json(value)
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        headers["ce-" + name] = urllib.parse.quote(text, safe=_SAFE)
    kind = ev.WhichOneof("data")
    if kind == "text_data":
        body = ev.text_data.encode("utf-8")
    elif kind == "binary_data":
        body = ev.binary_data
    elif kind == "proto_data":
        body = ev.proto_data.value
        headers.setdefault("content-type", "application/protobuf")
    else:
        body = b""
    return headers, body
