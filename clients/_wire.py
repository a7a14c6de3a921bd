"""Hand-rolled protobuf encoding for the publish hot path.

Building a ``CloudEvent`` message per event, copying it into a ``PublishRequest`` and serialising
the frame costs about 3 µs per event in Python; encoding the bytes directly costs well under 1 µs.
The attributes every event of a client shares (``source``, ``spec_version``, ``type``,
``datacontenttype``) are encoded once and cached. The output is ordinary protobuf: any decoder
reads it, and the tests check it against the generated classes byte for byte in meaning. The
varint and field framing are :mod:`broker.wire`'s, the one copy.

The publisher keeps each event as its *entry* in a ``PublishRequest`` (the ``events`` field's
tag and length, then the CloudEvent), so a frame is its subject, its entries and its batch id
joined: each event is framed once, when it is encoded, however often its frame is (re)sent.

Field numbers (see ``protos/broker/v1``)::

    CloudEvent:      id=1 source=2 spec_version=3 type=4 attributes=5 binary_data=6 text_data=7
    PublishRequest:  subject=1 events=2 batch_id=3
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from lockgate.broker.v1 import cloudevent_pb2
from lockgate.broker.wire import VARINTS, encode_varint, length_delimited, read_varint
from lockgate.clients._codec import (
    APPLICATION_JSON,
    OCTET_STREAM,
    SPEC_VERSION,
    TEXT_PLAIN,
    AttributeValue,
    complete_cloudevent,
    dumps_json,
    encode_payload,
    fill_cloudevent,
)

__all__ = [
    "EventEncoder",
    "encode_publish_frame",
    "encode_publish_request",
    "entry",
    "entry_event_size",
]

_ENTRY = b"\x12"  # PublishRequest.events
_ID_TAG = b"\x0a\x20"  # CloudEvent.id, 32 bytes long: a generated id
_TEXT = b"\x3a"  # CloudEvent.text_data
_BINARY = b"\x32"  # CloudEvent.binary_data
_CloudEvent = cloudevent_pb2.CloudEvent
_LOW3 = [b"%03x" % k for k in range(4096)]  # an id's last 3 hex digits
_HIGH_MASK = (1 << 52) - 1  # an id's counter is 16 hex digits: 13 high, 3 low


class EventEncoder:
    """Encodes events to ``CloudEvent`` wire bytes, caching the shared attributes, and names
    the events it is not given an id for (a random per-encoder prefix and a counter: unique
    like ``uuid4().hex``, several times cheaper).

    >>> enc = EventEncoder()
    >>> raw = enc.encode("hi", type="greeting", source="agent://a", id="1")
    >>> cloudevent_pb2.CloudEvent.FromString(raw).text_data
    'hi'
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str, str], bytes] = {}
        self._id_prefix = os.urandom(8).hex().encode()
        self._id_counter = 0
        self._id_high_of = -1
        self._id_high = b""

    def new_id(self) -> str:
        """A fresh event id, 32 hex digits."""
        return self._next_id()[2:].decode()

    def _next_id(self) -> bytes:
        # The id field whole (tag, length 32, digits): 16 random, 16 of the counter, of which
        # the first 13 change once in 4096 ids.
        n = self._id_counter = self._id_counter + 1
        high = self._id_high if n >> 12 == self._id_high_of else self._new_high(n)
        return high + _LOW3[n & 0xFFF]

    def _new_high(self, n: int) -> bytes:
        self._id_high_of = n >> 12
        self._id_high = b"\x0a\x20%s%013x" % (self._id_prefix, (n >> 12) & _HIGH_MASK)
        return self._id_high

    def _head(self, source: str, type: str, content_type: str) -> bytes:
        key = (source, type, content_type)
        head = self._heads.get(key)
        if head is None:
            ct = length_delimited(
                b"\x1a", content_type.encode()
            )  # CloudEventAttributeValue.ce_string=3
            entry = length_delimited(b"\x0a", b"datacontenttype") + length_delimited(b"\x12", ct)
            head = (
                length_delimited(b"\x12", source.encode())
                + length_delimited(b"\x1a", SPEC_VERSION.encode())
                + length_delimited(b"\x22", type.encode())
                + length_delimited(b"\x2a", entry)
            )
            if len(self._heads) > 1024:  # callers that vary type per event: stay bounded
                self._heads.clear()
            self._heads[key] = head
        return head

    def encode(
        self,
        data: object,
        *,
        type: str,
        source: str,
        id: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        datacontenttype: str | None = None,
    ) -> bytes:
        """The wire bytes of the CloudEvent carrying ``data`` (see :mod:`clients._codec`)."""
        if attributes:
            event = cloudevent_pb2.CloudEvent()
            fill_cloudevent(
                event,
                data,
                type=type,
                source=source,
                id=id,
                attributes=attributes,
                datacontenttype=datacontenttype,
            )
            return event.SerializeToString()
        idb = id.encode()
        raw = self._entry(
            b"\x0a" + encode_varint(len(idb)) + idb, data, type, source, datacontenttype
        )
        return raw[read_varint(raw, 1)[1] :]

    def _entry(
        self, id_field: bytes, data: object, type: str, source: str, ctype: str | None
    ) -> bytes:
        payload, default_ctype = encode_payload(data)
        if payload.__class__ is str:
            body, tag = payload.encode(), _TEXT
        else:
            body, tag = payload, _BINARY  # type: ignore[assignment]
        head = self._head(source, type, ctype or default_ctype)
        size = encode_varint(len(body))
        n = len(id_field) + len(head) + 1 + len(size) + len(body)
        return b"".join((_ENTRY, encode_varint(n), id_field, head, tag, size, body))

    def entry(
        self,
        data: object,
        type: str,
        source: str,
        id: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        datacontenttype: str | None = None,
    ) -> bytes:
        """The event as its ``PublishRequest`` entry; with no ``id`` (or ``""``), a fresh one. A
        ``CloudEvent`` goes as it is, completed with ``type`` and ``source`` if it lacks them."""
        if not id and not attributes and data.__class__ is not _CloudEvent:
            return self._entry(self._next_id(), data, type, source, datacontenttype)
        if isinstance(data, _CloudEvent):
            return entry(complete_cloudevent(data, type=type, source=source).SerializeToString())
        return entry(
            self.encode(
                data,
                type=type,
                source=source,
                id=id or self.new_id(),
                attributes=attributes,
                datacontenttype=datacontenttype,
            )
        )

    def entries(self, items: Iterable[object], type: str, source: str) -> list[bytes]:
        """Fresh-id entries of many events of one ``type`` and ``source``: :meth:`entry` per
        item, with the per-item work of the common payloads (bytes, str, dict, list) inlined."""
        out: list[bytes] = []
        append = out.append
        join = b"".join
        varint = encode_varint
        small = VARINTS  # a list index instead of a call for the common sizes
        binary_head = self._head(source, type, OCTET_STREAM) + _BINARY
        text_head = self._head(source, type, TEXT_PLAIN) + _TEXT
        json_head = self._head(source, type, APPLICATION_JSON) + _TEXT
        # An event: 34 bytes of id, the head with the payload's tag, its size, its bytes.
        fast = len(VARINTS) - 2 - 34 - max(len(binary_head), len(text_head), len(json_head))
        n = self._id_counter
        high_of = self._id_high_of
        high = self._id_high
        try:
            for item in items:
                n += 1
                cls = item.__class__
                if cls is bytes:
                    body, head = item, binary_head
                elif cls is str:
                    body, head = item.encode(), text_head  # type: ignore[attr-defined]
                elif cls is dict or cls is list:
                    body, head = dumps_json(item).encode(), json_head
                else:
                    self._id_counter = n - 1
                    append(self.entry(item, type, source))
                    continue
                if n >> 12 != high_of:
                    high_of = n >> 12
                    high = self._new_high(n)
                k = len(body)  # type: ignore[arg-type]
                if k < fast:
                    size = small[k]
                    total = small[34 + len(head) + len(size) + k]
                else:
                    size = varint(k)
                    total = varint(34 + len(head) + len(size) + k)
                append(join((_ENTRY, total, high, _LOW3[n & 0xFFF], head, size, body)))  # type: ignore[arg-type]
        finally:
            self._id_counter = max(n, self._id_counter)
        return out


def entry(raw: bytes) -> bytes:
    """A CloudEvent's wire bytes as an entry of ``PublishRequest.events``."""
    return _ENTRY + encode_varint(len(raw)) + raw


def entry_event_size(raw_entry: bytes) -> int:
    """The size of the CloudEvent inside an :func:`entry`."""
    return read_varint(raw_entry, 1)[0]


def encode_publish_frame(
    subject: bytes, entries: Sequence[bytes], batch_id: int, *, fresh: bool = False
) -> bytes:
    """The wire bytes of a ``PublishRequest`` from its subject's bytes and :func:`entry`\\s.
    ``fresh``: every entry's id was generated here and this is the frame's first send."""
    return b"".join(
        (
            b"\x0a",
            encode_varint(len(subject)),
            subject,
            *entries,
            b"\x18",
            encode_varint(batch_id),
            b"\x20\x01" if fresh else b"",
        )
    )


def encode_publish_request(subject: bytes, events: Sequence[bytes], batch_id: int) -> bytes:
    """The wire bytes of a ``PublishRequest`` from its subject's bytes and encoded events."""
    return encode_publish_frame(subject, [entry(raw) for raw in events], batch_id)
