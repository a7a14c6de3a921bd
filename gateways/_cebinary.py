"""The CloudEvents binary content mode (pure), shared by HTTP, webhooks and NATS.

Attributes travel as ``ce-<name>`` headers, the data as the body. Header values are the
attributes' canonical strings, percent-encoded as the HTTP and NATS bindings say (space,
``"``, ``%`` and everything outside printable ASCII); on the way in a double-quoted value
is unquoted first, then percent-decoded once, and a value that decodes to invalid UTF-8 is
refused. ``datacontenttype`` is ``Content-Type`` in the HTTP binding and
``ce-datacontenttype`` in the NATS binding (where ``Content-Type`` marks structured mode);
an event without one gets none. Header values carry no type, so extensions arrive as
Strings; ``time`` and ``dataschema`` get their own types (``broker.cloudevents``).

Example::

    headers, body = to_binary(event)
    same = from_binary(headers, body)
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Literal

from lockgate.broker.cloudevents import check_name, is_name, set_from_text
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.gateways._cejson import attribute_to_json, is_json_type

__all__ = [
    "Binding",
    "decode_header_value",
    "encode_header_value",
    "from_binary",
    "has_binary_headers",
    "is_structured_type",
    "to_binary",
]

CloudEvent = cloudevent_pb2.CloudEvent
Binding = Literal["http", "nats"]
# Printable ASCII but space, '"' and '%': the characters a header value keeps as they are.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _lower_items(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k.lower(), v) for k, v in items]


def has_binary_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
    """True when the message carries ``ce-specversion`` (binary content mode)."""
    return any(k == "ce-specversion" for k, _ in _lower_items(headers))


def is_structured_type(content_type: str) -> bool:
    """True for ``application/cloudevents`` media types (structured or batched mode),
    whatever ``ce-*`` headers come with them (the bindings say the media type decides)."""
    return content_type.split(";", 1)[0].strip().lower().startswith("application/cloudevents")


def encode_header_value(text: str) -> str:
    """``text`` percent-encoded for a header (upper-case hex, UTF-8)."""
    return urllib.parse.quote(text, safe=_SAFE)


def decode_header_value(name: str, raw: str) -> str:
    """A header value unquoted (RFC 7230 quoted-string) and percent-decoded once; raises
    :class:`InvalidEvent` when the decoded bytes are not UTF-8."""
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidEvent(
            f"header {name!r} percent-decodes to bytes that are not UTF-8",
            reason="INVALID_EVENT",
            hint="percent-encode the UTF-8 bytes of the value (e.g. %E2%82%AC for €)",
            metadata={"header": name},
        ) from None


def _is_text(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/")
        or (bool(base) and is_json_type(base))
        or base in ("application/xml", "application/x-www-form-urlencoded")
    )


def from_binary(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    binding: Binding = "http",
) -> CloudEvent:
    """The event of a binary-mode message; raises :class:`InvalidEvent` on a bad header."""
    ev = CloudEvent()
    ctype = ""
    for name, raw in _lower_items(headers):
        if name == "content-type":
            if binding == "http" or not ctype:  # NATS: ce-datacontenttype wins
                ctype = raw.strip()
            continue
        if not name.startswith("ce-"):
            continue
        attr = name[3:]
        value = decode_header_value(name, raw)
        if attr == "specversion":
            ev.spec_version = value
        elif attr in ("id", "source", "type"):
            setattr(ev, attr, value)
        elif attr == "datacontenttype" and binding == "nats":
            ctype = value
        else:
            err = check_name(attr)
            if err is not None:
                raise err
            set_from_text(ev.attributes[attr], attr, value)
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


def to_binary(ev: CloudEvent, binding: Binding = "http") -> tuple[dict[str, str], bytes]:
    """Headers (``ce-*``, and ``content-type`` in the HTTP binding when the event has a
    content type) and body for ``ev`` in binary mode. Raises ``ValueError`` for an event
    whose attributes have no string form (the caller skips and reports it)."""
    headers = {
        "ce-specversion": encode_header_value(ev.spec_version),
        "ce-id": encode_header_value(ev.id),
        "ce-source": encode_header_value(ev.source),
        "ce-type": encode_header_value(ev.type),
    }
    http = binding == "http"
    ctype_header = "content-type" if http else "ce-datacontenttype"
    for name, value in ev.attributes.items():
        if name == "datacontenttype":  # a media type: printable ASCII (broker.cloudevents)
            ctype = value.ce_string
            headers[ctype_header] = ctype if http else encode_header_value(ctype)
            continue
        if not is_name(name):
            raise ValueError(f"attribute name {name!r} cannot be a header name")
        v = attribute_to_json(value)
        text = ("true" if v else "false") if isinstance(v, bool) else str(v)
        headers["ce-" + name] = encode_header_value(text)
    kind = ev.WhichOneof("data")
    if kind == "text_data":
        body = ev.text_data.encode("utf-8")
    elif kind == "binary_data":
        body = ev.binary_data
    elif kind == "proto_data":
        body = ev.proto_data.value
        headers.setdefault(ctype_header, "application/protobuf")
    else:
        body = b""
    return headers, body
