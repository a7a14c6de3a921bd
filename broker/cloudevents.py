"""The CloudEvents attribute rules, in one place (pure: no I/O).

Every ingress reaches these: the broker's publish check calls :func:`check_attributes` on
each event that carries attributes, and the gateways' JSON and binary parsers call
:func:`check_name`, :func:`parse_timestamp` and the URI tests while they build an event.

The rules (CloudEvents 1.0.2, ``spec.md`` "Attribute Naming Convention" and "Type System"):

* **Names** are lower-case ASCII letters and digits (``[a-z0-9]+``; a leading digit is
  allowed). The spec says names SHOULD NOT exceed 20 characters; that is advice, and the
  broker's own dead-letter attributes are longer (``lockgateoriginalsubject``), so the
  hard limit here is :data:`MAX_NAME_LENGTH` (64), which keeps ``ce-*`` headers sane.
  ``id``, ``source``, ``specversion``, ``type`` and ``data`` are not extension names: the
  first four are the event's own fields in the protobuf format, ``data`` is the payload.
  Names starting with ``lockgate`` are the broker's own markers (``lockgateroutedfrom``,
  ``lockgateoriginalsubject``, added after the checks): :func:`check_name` refuses them, so
  no publisher can forge them; :func:`is_name` (the syntax, used on the way out) accepts them.
* **Values** follow the type system: a String holds no control characters (U+0000-U+001F,
  U+007F-U+009F), no lone surrogates and no noncharacters; a URI is absolute (it has a
  scheme); a URI-reference is a URI or a relative reference; a Timestamp lies between
  0001-01-01 and 9999-12-31 (so it has an RFC 3339 form) with nanoseconds below 10^9;
  Boolean, Integer (32 bits by construction) and Binary are always valid.
* **Known attributes** have a type: ``datacontenttype`` and ``subject`` are Strings
  (``datacontenttype`` a media type such as ``application/json``), ``dataschema`` a URI,
  ``time`` a Timestamp. A value given as a String in the canonical form of the required
  type is accepted (``time`` as ``"2024-05-01T12:00:00Z"``), as the type system allows;
  anything else is refused.

The required attributes (id, source, specversion, type) are checked for presence by the
publish path, which reads them for every event anyway; their content is not parsed here,
so an event without extension attributes costs nothing extra.

Example::

    err = check_attributes(event.attributes)
    if err is not None:
        raise err
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from google.protobuf import timestamp_pb2

from lockgate.broker.errors import InvalidEvent
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.policy.attributes import (
    BROKER_PREFIX,
    MAX_NAME_LENGTH,
    RESERVED_NAMES,
    is_broker_name,
    is_extension_name,
)

__all__ = [
    "MAX_NAME_LENGTH",
    "RESERVED_NAMES",
    "check_attribute",
    "check_attributes",
    "check_name",
    "is_name",
    "is_uri",
    "is_uri_reference",
    "parse_timestamp",
    "set_from_text",
    "timestamp_problem",
]

AttributeValue = cloudevent_pb2.CloudEvent.CloudEventAttributeValue

# Control characters, surrogates and the noncharacters of every plane.
_BAD_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(p * 0x10000 + 0xFFFE)}{chr(p * 0x10000 + 0xFFFF)}" for p in range(17))
    + "]"
)
# RFC 3986: the characters a URI may hold, and percent escapes that are well formed.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*\Z")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
# RFC 7231 media type: type "/" subtype, then optional parameters.
_MEDIA_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+/[!#$%&'*+.^_`|~0-9A-Za-z\-]+\s*(?:;.*)?\Z")
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_NAME_OK: set[str] = set()  # names already checked (a dict lookup on the hot path)
_TIME_HINT = "write times like 2024-05-01T12:00:00Z (RFC 3339)"


def _invalid(name: str, message: str, hint: str) -> InvalidEvent:
    return InvalidEvent(message, reason="INVALID_EVENT", hint=hint, metadata={"attribute": name})


def is_name(name: str) -> bool:
    """True when ``name`` may name an extension attribute (see the module docstring)."""
    if name in _NAME_OK:
        return True
    if not is_extension_name(name):
        return False
    if len(_NAME_OK) < 4096:
        _NAME_OK.add(name)
    return True


def check_name(name: str) -> InvalidEvent | None:
    """The error for an extension attribute name a publisher may not use, or None: invalid,
    reserved, or one of the broker's own (``lockgate…``)."""
    if is_name(name):
        if is_broker_name(name):
            return _invalid(
                name,
                f"attribute {name!r} belongs to the broker",
                f"attribute names starting with {BROKER_PREFIX!r} are set by the broker only; "
                "rename the attribute",
            )
        return None
    if name in RESERVED_NAMES:
        return _invalid(
            name,
            f"{name!r} is not an extension attribute",
            "id, source, specversion and type are the event's own fields; data is its payload",
        )
    shown = name if len(name) <= 70 else name[:67] + "..."
    return _invalid(
        name,
        f"attribute name {shown!r} is invalid",
        f"CloudEvents attribute names are 1 to {MAX_NAME_LENGTH} lower-case letters a-z "
        "and digits 0-9",
    )


def is_uri(text: str) -> bool:
    """True for an absolute URI (RFC 3986: a scheme, then URI characters)."""
    return _SCHEME.match(text) is not None and _URI_CHARS.match(text) is not None


def is_uri_reference(text: str) -> bool:
    """True for a URI or a relative reference (RFC 3986 section 4.1)."""
    if _URI_CHARS.match(text) is None:
        return False
    # A colon before the first "/", "?" or "#" must end a scheme (a relative path's first
    # segment holds no colon).
    head = re.split(r"[/?#]", text, maxsplit=1)[0]
    return ":" not in head or _SCHEME.match(text) is not None


def timestamp_problem(ts: timestamp_pb2.Timestamp) -> str | None:
    """Why ``ts`` has no RFC 3339 form, or None when it has one."""
    if not 0 <= ts.nanos <= 999_999_999:
        return f"has nanoseconds ({ts.nanos}) outside 0..999999999"
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
        return f"has seconds ({ts.seconds}) outside the years 0001 to 9999"
    return None


def parse_timestamp(text: str, name: str = "time") -> timestamp_pb2.Timestamp:
    """The timestamp of an RFC 3339 string; raises :class:`InvalidEvent` otherwise."""
    ts = timestamp_pb2.Timestamp()
    try:
        ts.FromJsonString(text)
    except (ValueError, TypeError):
        ts.seconds = _MAX_SECONDS + 1  # marks the failure without a second try block
    if timestamp_problem(ts) is not None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise _invalid(name, f"{name} {shown!r} is not an RFC 3339 timestamp", _TIME_HINT)
    return ts


def _string_problem(text: str) -> str | None:
    bad = _BAD_CHARS.search(text)
    if bad is None:
        return None
    return f"holds the character U+{ord(bad.group()):04X}, which CloudEvents strings exclude"


def _canonical_problem(kind: str, text: str) -> str | None:
    """Why ``text`` is not the string form of a value of ``kind``, or None."""
    if kind == "timestamp":
        try:
            parse_timestamp(text)
        except InvalidEvent:
            return f"is not an RFC 3339 timestamp ({text[:40]!r})"
        return None
    if kind == "uri":
        return None if is_uri(text) else f"is not an absolute URI ({text[:40]!r})"
    if kind == "media":
        if _MEDIA_TYPE.match(text) is None:
            return f"is not a media type such as application/json ({text[:40]!r})"
        return _string_problem(text)
    return _string_problem(text)


# The type each known attribute requires: "string", "media" (a media type string), "uri",
# "timestamp"; and the value kind that holds that type natively.
_KNOWN = {
    "datacontenttype": "media",
    "subject": "string",
    "dataschema": "uri",
    "time": "timestamp",
}
_NATIVE = {
    "string": "ce_string",
    "media": "ce_string",
    "uri": "ce_uri",
    "timestamp": "ce_timestamp",
}
_TYPE_NAMES = {
    "string": "a String",
    "media": "a String (a media type)",
    "uri": "a URI",
    "timestamp": "a Timestamp",
    "ce_boolean": "a Boolean",
    "ce_integer": "an Integer",
    "ce_string": "a String",
    "ce_bytes": "a Binary",
    "ce_uri": "a URI",
    "ce_uri_ref": "a URI-reference",
    "ce_timestamp": "a Timestamp",
}


def _value_problem(kind: str, value: AttributeValue) -> str | None:
    if kind == "ce_string":
        return _string_problem(value.ce_string)
    if kind == "ce_timestamp":
        return timestamp_problem(value.ce_timestamp)
    if kind == "ce_uri":
        return None if is_uri(value.ce_uri) else f"is not an absolute URI ({value.ce_uri[:40]!r})"
    if kind == "ce_uri_ref":
        if is_uri_reference(value.ce_uri_ref):
            return None
        return f"is not a URI-reference ({value.ce_uri_ref[:40]!r})"
    return None  # Boolean, Integer (32 bits by construction), Binary


def check_attribute(name: str, value: AttributeValue) -> InvalidEvent | None:
    """The error for one attribute (name and value), or None."""
    err = check_name(name)
    if err is not None:
        return err
    kind = value.WhichOneof("attr")
    required = _KNOWN.get(name)
    if kind is None:
        problem: str | None = "has no value"
    elif required is None:
        problem = _value_problem(kind, value)
    elif kind == "ce_string":  # the canonical string form of the required type
        problem = _canonical_problem(required, value.ce_string)
    elif kind != _NATIVE[required]:
        problem = f"is {_TYPE_NAMES[kind]}, not {_TYPE_NAMES[required]}"
    else:
        problem = _value_problem(kind, value)
    if problem is None:
        return None
    if required == "timestamp" or kind == "ce_timestamp":
        hint = _TIME_HINT
    elif required is not None:
        hint = f"{name} must be {_TYPE_NAMES[required]}"
    else:
        hint = "see the CloudEvents type system (spec.md, Type System)"
    return _invalid(name, f"attribute {name!r} {problem}", hint)


def set_from_text(target: AttributeValue, name: str, text: str) -> None:
    """Sets ``target`` to attribute ``name`` written as text (a JSON string, a header): in
    the known attribute's own type (``time`` a Timestamp, ``dataschema`` a URI), else as a
    String. Raises :class:`InvalidEvent` for a ``time`` that is not RFC 3339; the value
    rules are :func:`check_attribute`'s."""
    required = _KNOWN.get(name)
    if required == "timestamp":
        target.ce_timestamp.CopyFrom(parse_timestamp(text, name))
    elif required == "uri":
        target.ce_uri = text
    else:
        target.ce_string = text


_GOOD_STRINGS: dict[tuple[str, str], None] = {}
"""(name, string value) pairs that passed :func:`check_attribute`: most events of a publisher
carry the same few (``datacontenttype``), and checking one costs microseconds per event."""
_GOOD_MAX = 4096
_GOOD_LONGEST = 256


def check_attributes(attributes: Mapping[str, AttributeValue]) -> InvalidEvent | None:
    """The error for the first invalid attribute of an event, or None when all are valid.

    Call it only for events that have attributes: the empty map needs no check.
    """
    good = _GOOD_STRINGS
    for name, value in attributes.items():
        text = value.ce_string if value.WhichOneof("attr") == "ce_string" else None
        if text is not None and (name, text) in good:
            continue
        err = check_attribute(name, value)
        if err is not None:
            return err
        if text is not None and len(text) <= _GOOD_LONGEST and len(good) < _GOOD_MAX:
            good[(name, text)] = None  # check_attribute is pure: the verdict stands
    return None
