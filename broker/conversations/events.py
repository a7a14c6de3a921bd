"""The events a conversation carries, built in one place: the broker's own JSON events
(lifecycle, receipts, typing, presence) and an agent's message.

>>> ev = conversation_event("c1", "conversation.closed", {"by": "ann"})
>>> ev.source, ev.text_data, ev.attributes["convid"].ce_string
('lockgate:conversation/c1', '{"conversation_id": "c1", "by": "ann"}', 'c1')
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping

from lockgate.broker.v1 import cloudevent_pb2

__all__ = ["conversation_event", "message_event"]

CloudEvent = cloudevent_pb2.CloudEvent


def conversation_event(
    cid: str, type_: str, body: Mapping[str, object]
) -> cloudevent_pb2.CloudEvent:
    """An event the broker writes about conversation ``cid``: JSON naming it, then ``body``."""
    ev = CloudEvent(
        id=secrets.token_hex(16),
        source=f"lockgate:conversation/{cid}",
        spec_version="1.0",
        type=type_,
        text_data=json.dumps({"conversation_id": cid, **body}),
    )
    ev.attributes["datacontenttype"].ce_string = "application/json"
    ev.attributes["convid"].ce_string = cid
    return ev


def message_event(
    cid: str,
    sender: str,
    data: bytes,
    content_type: str,
    encryption: Mapping[str, str],
    message_key: str = "",
) -> cloudevent_pb2.CloudEvent:
    """An agent's message; ``message_key`` (when given) is its id, so a retry is a duplicate."""
    ev = CloudEvent(
        id=message_key or secrets.token_hex(16),
        source=f"lockgate:agent/{sender}",
        spec_version="1.0",
        type="conversation.message",
        binary_data=data,
    )
    attrs = ev.attributes
    attrs["datacontenttype"].ce_string = content_type or "application/octet-stream"
    attrs["convid"].ce_string = cid
    attrs["convsender"].ce_string = sender
    for name, value in encryption.items():
        if value:
            attrs[name].ce_string = value
    return ev
