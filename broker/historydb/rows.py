"""One stored batch -> one row per event for the history table (pure: no I/O).

A row is what the message logger COPYs into the history table (:data:`ROW_COLUMNS`): the
broker id, the stored time (the id's time), org, subject, the batch's stream sequence, the
CloudEvents id, source and type, the event's ``time`` (None when absent), the policy
version, the content type, the event bytes as stored, the payload's text when it claims to
be JSON (PostgreSQL decides whether it is: see ``broker.historydb.writer``), and the batch's
publisher (``broker.publisher``: agent and roles).

The two times are integers, PostgreSQL's own binary form of a timestamp (microseconds since
2000-01-01 UTC, :data:`PG_EPOCH_US`): the writer hands them to the COPY as they are, where
asyncpg's encoding of a ``datetime`` cost about 1 us per event, as much as the rest of the
row's encoding.

Example::

    rows = event_rows(batch)
    async with micros_timestamps(conn):   # broker.historydb.writer
        await conn.copy_records_to_table("history_events", records=rows, columns=ROW_COLUMNS)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from lockgate.broker.cloudevents import parse_timestamp
from lockgate.broker.errors import InvalidEvent
from lockgate.broker.ids import EPOCH_MS, id_for_time_ms
from lockgate.broker.store import Batch
from lockgate.broker.v1 import cloudevent_pb2

__all__ = [
    "PG_EPOCH_US",
    "ROW_COLUMNS",
    "BadBatch",
    "EventRow",
    "event_rows",
    "frames",
    "is_json_type",
]

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

PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01T00:00:00Z in Unix microseconds: PostgreSQL's binary timestamps count from it."""

EventRow = tuple[
    int,
    int,
    str,
    str,
    int,
    str,
    str,
    str,
    int | None,
    str,
    str | None,
    bytes,
    str | None,
    str,
]

_CloudEvent = cloudevent_pb2.CloudEvent

# 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the CloudEvents (RFC 3339) range.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


class BadBatch(ValueError):
    """A batch body that does not hold delivery frames (the logger skips it, logged)."""


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


def _time(attr: _CloudEvent.CloudEventAttributeValue) -> int | None:
    """The ``time`` attribute in PostgreSQL microseconds (None: absent or unusable)."""
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
    return ts.seconds * 1_000_000 + ts.nanos // 1000 - PG_EPOCH_US


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


def _raw_deliveries() -> Callable[[bytes], Any]:
    """The parser of a ``SubscribeResponse`` whose ``Delivery.event`` is read as bytes.

    A message field and a bytes field of the same number share their wire format, so this
    view of the stored body hands each event's bytes out exactly as stored, parsed by the
    protobuf runtime (C), where a walk in Python over every frame cost about as much as
    parsing the events themselves.
    """
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="lockgate/historydb/raw_deliveries.proto", package="lockgate.historydb"
    )
    proto.syntax = "proto3"
    delivery = proto.message_type.add(name="RawDelivery")
    delivery.field.add(name="id", number=1, type=field.TYPE_UINT64, label=field.LABEL_OPTIONAL)
    delivery.field.add(name="event", number=3, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    body = proto.message_type.add(name="RawDeliveries")
    body.field.add(
        name="deliveries",
        number=2,  # SubscribeResponse.deliveries
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".lockgate.historydb.RawDelivery",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("lockgate.historydb.RawDeliveries")
    )
    return cast(Callable[[bytes], Any], cls.FromString)


_parse_raw = _raw_deliveries()


def frames(batch: Batch) -> list[tuple[int, bytes]]:
    """The ``(id, event bytes)`` of each delivery frame of ``batch`` (``broker.wire``), the
    event bytes as stored (with whatever a policy appended); :class:`BadBatch` when the body
    is not delivery frames."""
    try:
        body = _parse_raw(batch.body)
    except DecodeError as exc:
        raise BadBatch(f"the batch body is not delivery frames: {exc}") from None
    if len(UnknownFieldSet(body)):  # fields beside the frames: not a body a node stores
        raise BadBatch("the batch body holds more than delivery frames")
    out = [(d.id, d.event) for d in body.deliveries]
    if any(event_id == 0 for event_id, _ in out):
        raise BadBatch("a Delivery frame has no id")
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
    offset = EPOCH_MS * 1000 - PG_EPOCH_US
    for event_id, raw in frames(batch):
        stored_at = (event_id >> shift) * 1000 + offset  # the id's millisecond
        try:
            ev = parse(raw)
        except DecodeError as exc:
            raise BadBatch(f"event bytes are not a CloudEvent: {exc}") from None
        attrs = ev.attributes
        content_type: str | None = None
        ce_time: int | None = None
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
