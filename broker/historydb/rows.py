"""One stored batch -> one row per event for the history table (pure: no I/O).

A row is what the message logger COPYs into the history table (:data:`ROW_COLUMNS`): the
broker id, the stored time (the id's time), org, subject, the batch's stream sequence, the
CloudEvents id, source and type, the event's ``time`` (None when absent), the policy
version, the content type, the event bytes as stored, the payload's text when it claims to
be JSON (PostgreSQL decides whether it is: see ``broker.historydb.writer``), and the batch's
publisher (``broker.publisher``: agent and roles).

Example::

    rows = event_rows(batch)
    await conn.copy_records_to_table("history_events", records=rows, columns=ROW_COLUMNS)
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import DecodeError

from lockgate.broker import wire
from lockgate.broker.cloudevents import parse_timestamp
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.ids import EPOCH_MS, id_for_time_ms
from lockgate.broker.store import Batch
from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["ROW_COLUMNS", "BadBatch", "EventRow", "event_bytes", "event_rows", "is_json_type"]

ROW_COLUMNS = (
    "id",
    "stored_at",
    "org",
    "subject",
    "seq",
    "ce_id",
    "source",
    "type",
    "ce_time",
    "policy_version",
    "content_type",
    "event",
    "data",
    "publisher",
)
"""The history table's columns, in the order of an :data:`EventRow`."""

EventRow = tuple[
    int,
    dt.datetime,
    str,
    str,
    int,
    str,
    str,
    str,
    dt.datetime | None,
    str,
    str | None,
    bytes,
    str | None,
    str,
]

_UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CloudEvent = cloudevent_pb2.CloudEvent

# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the CloudEvents (RFC 3339) range.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


class BadBatch(ValueError):
    """A batch body that does not hold delivery frames (the logger skips it, logged)."""


def event_bytes(frame: bytes) -> tuple[int, bytes]:
    """The id and the serialized ``CloudEvent`` of one delivery frame (``broker.wire``):
    walks the ``Delivery`` fields in whatever order they come."""
    read = wire.read_varint
    length, pos = read(frame, 1)
    end = pos + length
    if frame[:1] != b"\x12" or end > len(frame):
        raise BadBatch("a frame is not a length-delimited Delivery")
    event_id = 0
    event = b""
    while pos < end:
        key, pos = read(frame, pos)
        kind = key & 7
        if kind == 0:
            value, pos = read(frame, pos)
            if key >> 3 == 1:
                event_id = value
        elif kind == 2:
            n, pos = read(frame, pos)
            if key >> 3 == 3:
                event = frame[pos : pos + n]
            pos += n
        else:
            raise BadBatch(f"a Delivery field has wire type {kind}")
    if pos != end or event_id == 0:
        raise BadBatch("a Delivery frame is truncated or has no id")
    return event_id, event


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``datacontenttype`` says JSON (absent: CloudEvents' JSON default).

    >>> is_json_type(None), is_json_type("application/cloudevents+json; charset=utf-8")
    (True, True)
    """
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _text(value: str) -> str:
    # A PostgreSQL text value cannot hold U+0000 (the publish path does not refuse it in
    # an id or a source): one such event must not stop the logger for good.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


_TIME_SHIFT = id_for_time_ms(EPOCH_MS + 1).bit_length() - 1


def _time(attr: _CloudEvent.CloudEventAttributeValue) -> dt.datetime | None:
    kind = attr.WhichOneof("attr")
    if kind == "ce_timestamp":
        ts = attr.ce_timestamp
    elif kind == "ce_string":
        try:
            ts = parse_timestamp(attr.ce_string)
        except InvalidEvent:
            return None
    else:
        return None
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS:
        return None  # outside what PostgreSQL (and Python) can hold: better no time than none
    return _UNIX + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _data_text(event: _CloudEvent) -> str | None:
    kind = event.WhichOneof("data")
    if kind == "text_data":
        text = event.text_data
    elif kind == "binary_data":
        try:
            text = event.binary_data.decode()
        except UnicodeDecodeError:
            return None
    else:
        return None
    return None if "\x00" in text else text


def _frames(batch: Batch) -> list[tuple[int, bytes]]:
    """The ``(id, event bytes)`` of each frame of ``batch``.

    The frames a node stores all come from ``wire.delivery_frames``: tag, length, the id,
    the batch's subject field, the event, attempt 1. That layout is read here without a
    generic walk (the id's eight high varint bytes are shared by runs of 128 ids); a frame
    laid out otherwise goes through :func:`event_bytes`.
    """
    body = batch.body
    end = len(body)
    sf = wire.subject_field(batch.subject)
    nsf = len(sf)
    read = wire.read_varint
    out: list[tuple[int, bytes]] = []
    append = out.append
    high = b""
    base = -1
    pos = 0
    try:
        while pos < end:
            if body[pos] != 0x12:
                raise BadBatch("a frame is not a length-delimited Delivery")
            length, start = read(body, pos + 1)
            stop = start + length
            if stop > end:
                raise BadBatch("the batch body ends inside a frame")
            q = start + 1
            if (
                body[start] == 0x08
                and body[q] >= 0x80
                and body[q + 8] < 0x80
                and body.startswith(sf, q + 9)
            ):
                if body[q + 1 : q + 9] != high:
                    high = body[q + 1 : q + 9]
                    base = read(body, q)[0] & ~0x7F
                event_id = base | (body[q] & 0x7F)
                q += 9 + nsf
                if body[q] == 0x1A:
                    n, q = read(body, q + 1)
                    if q + n + 2 == stop and body[q + n : stop] == b"\x20\x01":
                        append((event_id, body[q : q + n]))
                        pos = stop
                        continue
            append(event_bytes(body[pos:stop]))
            pos = stop
    except IndexError:
        raise BadBatch("a frame ends inside a field") from None
    return out


_JSON_TYPES: dict[str | None, bool] = {}


def event_rows(batch: Batch) -> list[EventRow]:
    """The rows of ``batch``'s events; raises :class:`BadBatch` when its body is not
    delivery frames or an event is not a ``CloudEvent``."""
    org, subject = _text(batch.org), _text(batch.subject)
    policy = _text(batch.policy_version)
    publisher = _text(batch.publisher)
    seq = batch.seq
    out: list[EventRow] = []
    append = out.append
    parse = _CloudEvent.FromString
    json_types = _JSON_TYPES
    shift = _TIME_SHIFT
    last_ms = -1
    stored_at = _UNIX
    for event_id, raw in _frames(batch):
        ms = event_id >> shift
        if ms != last_ms:  # the ids of a batch share a few milliseconds
            last_ms = ms
            stored_at = _UNIX + dt.timedelta(milliseconds=ms + EPOCH_MS)
        try:
            ev = parse(raw)
        except DecodeError as exc:
            raise BadBatch(f"event bytes are not a CloudEvent: {exc}") from None
        attrs = ev.attributes
        content_type: str | None = None
        ce_time: dt.datetime | None = None
        if attrs:
            ct = attrs.get("datacontenttype")
            if ct is not None:
                content_type = _text(ct.ce_string)
            t = attrs.get("time")
            if t is not None:
                ce_time = _time(t)
        is_json = json_types.get(content_type)
        if is_json is None:
            is_json = is_json_type(content_type)
            if len(json_types) < 256:
                json_types[content_type] = is_json
        ce_id, source, kind = ev.id, ev.source, ev.type
        if "\x00" in ce_id or "\x00" in source or "\x00" in kind:
            ce_id, source, kind = _text(ce_id), _text(source), _text(kind)
        append(
            (
                event_id,
                stored_at,
                org,
                subject,
                seq,
                ce_id,
                source,
                kind,
                ce_time,
                policy,
                content_type,
                raw,
                _data_text(ev) if is_json else None,
                publisher,
            )
        )
    return out
