"""Hand-rolled protobuf encoding for the publish hot path.

Building a ``CloudEvent`` message per event, copying it into a ``PublishRequest`` and serialising
the frame costs about 3 µs per event in Python; encoding the bytes directly costs well under 1 µs.
The attributes every event of a client shares (``source``, ``spec_version``, ``type``,
``datacontenttype``) are encoded once and cached. The output is ordinary protobuf: any decoder
reads it, and the tests check it against the generated classes byte for byte in meaning. The
varint and field framing are :mod:`broker.wire`'s, the one copy.

Field numbers (see ``protos/broker/v1``)::

    CloudEvent:      id=1 source=2 spec_version=3 type=4 attributes=5 binary_data=6 text_data=7
    PublishRequest:  subject=1 events=2 batch_id=3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lockgate.broker.v1 import cloudevent_pb2
from lockgate.broker.wire import encode_varint, length_delimited
from lockgate.clients._codec import SPEC_VERSION, AttributeValue, encode_payload, fill_cloudevent

__all__ = ["EventEncoder", "encode_publish_request"]


class EventEncoder:
    """Encodes events to ``CloudEvent`` wire bytes, caching the shared attributes.

    >>> enc = EventEncoder()
    >>> raw = enc.encode("hi", type="greeting", source="agent://a", id="1")
    >>> cloudevent_pb2.CloudEvent.FromString(raw).text_data
    'hi'
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str, str], bytes] = {}

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
        payload, ctype = encode_payload(data)
        if isinstance(payload, str):
            body, tag = payload.encode(), b"\x3a"  # text_data
        else:
            body, tag = payload, b"\x32"  # binary_data
        idb = id.encode()
        return b"".join(
            (
                b"\x0a",
                encode_varint(len(idb)),
                idb,
                self._head(source, type, datacontenttype or ctype),
                tag,
                encode_varint(len(body)),
                body,
            )
        )


def encode_publish_request(subject: bytes, events: Sequence[bytes], batch_id: int) -> bytes:
    """The wire bytes of a ``PublishRequest`` from its subject's bytes and encoded events."""
    parts = [b"\x0a", encode_varint(len(subject)), subject]
    for raw in events:
        parts.append(b"\x12")
        parts.append(encode_varint(len(raw)))
        parts.append(raw)
    parts.append(b"\x18")
    parts.append(encode_varint(batch_id))
    return b"".join(parts)
