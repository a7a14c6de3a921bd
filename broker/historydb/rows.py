"""One stored batch -> one row per event for the history table (pure: no I/O).

A row is what the message logger COPYs into its staging table: the broker id, org, subject,
the batch's stream sequence, the CloudEvents id, source and type, the event's ``time`` (Unix
microseconds, None when absent), the policy version, the content type, the event bytes as
stored, and the payload's text when it claims to be JSON (PostgreSQL decides whether it is:
see ``broker.historydb.writer``). The stored time is not in the row: it is the id's time,
computed by PostgreSQL from the id.

Example::

    rows = event_rows(batch)
    await conn.copy_records_to_table("lg_history_in", records=rows, columns=ROW_COLUMNS)
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from lockgate.broker import wire
from lockgate.broker.cloudevents import parse_timestamp
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.store import Batch
from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["ROW_COLUMNS", "BadBatch", "EventRow", "event_bytes", "event_rows", "is_json_type"]

ROW_COLUMNS = (
    "id",
    "org",
    "subject",
    "seq",
    "ce_id",
    "source",
    "type",
    "ce_time_us",
    "policy_version",
    "content_type",
    "event",
    "data_text",
)

EventRow = tuple[int, str, str, int, str, str, str, int | None, str, str | None, bytes, str | None]

_CloudEvent = cloudevent_pb2.CloudEvent


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


def _time_us(attr: _CloudEvent.CloudEventAttributeValue) -> int | None:
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
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def _data_text(event: _CloudEvent, content_type: str | None) -> str | None:
    if not is_json_type(content_type):
        return None
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


def event_rows(batch: Batch) -> list[EventRow]:
    """The rows of ``batch``'s events; raises :class:`BadBatch` when its body is not
    delivery frames or an event is not a ``CloudEvent``."""
    org, subject = _text(batch.org), _text(batch.subject)
    policy = _text(batch.policy_version)
    seq = batch.seq
    out: list[EventRow] = []
    append = out.append
    parse = _CloudEvent.FromString
    try:
        frames = wire.split_frames(batch.body)
    except IndexError:
        raise BadBatch("the batch body ends inside a frame") from None
    for _, frame in frames:
        try:
            event_id, raw = event_bytes(frame)
            ev = parse(raw)
        except IndexError:
            raise BadBatch("a frame ends inside a field") from None
        except DecodeError as exc:
            raise BadBatch(f"event bytes are not a CloudEvent: {exc}") from None
        attrs = ev.attributes
        content_type = (
            _text(attrs["datacontenttype"].ce_string) if "datacontenttype" in attrs else None
        )
        append(
            (
                event_id,
                org,
                subject,
                seq,
                _text(ev.id),
                _text(ev.source),
                _text(ev.type),
                _time_us(attrs["time"]) if "time" in attrs else None,
                policy,
                content_type,
                raw,
                _data_text(ev, content_type),
            )
        )
    return out
