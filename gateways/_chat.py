"""The WebSocket gateway's chat frames: conversations as chat clients expect them.

Client frames turn into ``ConversationService`` requests (:func:`join_request`, ...), and the
deliveries of a joined room (``$conv.<id>.>``) into chat frames (:func:`chat_frame`): pure
functions, no I/O. The frames are documented in the README's "Conversations" section.
"""

from __future__ import annotations

import base64
import binascii
from typing import cast

from lockgate.broker.api import Delivery
from lockgate.broker.v1 import conversation_pb2
from lockgate.gateways._cejson import JsonValue
from lockgate.gateways._json import loads
from lockgate.gateways._web import parse_time_ms
from lockgate.gateways.errors import InvalidParameter

__all__ = [
    "chat_frame",
    "conversation_json",
    "conversation_of",
    "join_request",
    "leave_request",
    "message_json",
    "send_request",
    "typing_request",
]

pb = conversation_pb2
_TYPES = {1: "direct", 2: "group", 3: "broadcast"}
_ROLES = {1: "member", 2: "admin", 3: "owner"}
#: Lifecycle event types that have a chat frame of their own; the rest are "conversation".
_FRAMES = {
    "conversation.member_joined": "user_joined",
    "conversation.member_left": "user_left",
    "conversation.member_removed": "user_left",
    "conversation.typing": "typing",
    "conversation.presence": "presence",
    "conversation.receipt": "receipt",
}


def conversation_of(doc: dict[str, object]) -> str:
    cid = doc.get("conversation")
    if not isinstance(cid, str) or not cid:
        raise InvalidParameter("conversation", str(cid), "a conversation id")
    return cid


def join_request(doc: dict[str, object]) -> conversation_pb2.JoinConversationRequest:
    req = pb.JoinConversationRequest(conversation_id=conversation_of(doc))
    last_n = doc.get("last_n", 0)
    if not isinstance(last_n, int) or isinstance(last_n, bool) or not 0 <= last_n <= 1000:
        raise InvalidParameter("last_n", str(last_n), "a number of messages from 0 to 1000")
    req.history.last_n = last_n
    since = doc.get("since")
    if since is not None:
        req.history.since_time.FromMilliseconds(parse_time_ms("since", str(since)))
    return req


def leave_request(doc: dict[str, object]) -> conversation_pb2.LeaveConversationRequest:
    return pb.LeaveConversationRequest(conversation_id=conversation_of(doc))


def typing_request(doc: dict[str, object]) -> conversation_pb2.SetTypingRequest:
    typing = doc.get("typing", True)
    if not isinstance(typing, bool):
        raise InvalidParameter("typing", str(typing), "true or false")
    return pb.SetTypingRequest(conversation_id=conversation_of(doc), typing=typing)


def send_request(doc: dict[str, object]) -> conversation_pb2.SendMessageRequest:
    req = pb.SendMessageRequest(conversation_id=conversation_of(doc))
    if isinstance(doc.get("data"), str):
        try:
            req.data = base64.b64decode(str(doc["data"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidParameter("data", str(doc["data"]), "base64 bytes") from exc
        req.content_type = str(doc.get("content_type") or "application/octet-stream")
    elif isinstance(doc.get("text"), str):
        req.data = str(doc["text"]).encode()
        req.content_type = str(doc.get("content_type") or "text/plain; charset=utf-8")
    else:
        raise InvalidParameter("data", "(none)", '"data" (base64) or "text"')
    enc = doc.get("encryption")
    if enc is not None:
        if not isinstance(enc, dict):
            raise InvalidParameter("encryption", str(enc), "an object (scheme, key_type, epoch)")
        epoch = enc.get("epoch", 0)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise InvalidParameter("encryption.epoch", str(epoch), "a non-negative integer")
        params = enc.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidParameter("encryption.params", str(params), "an object of strings")
        req.encryption_metadata.CopyFrom(
            pb.EncryptionMetadata(
                scheme=str(enc.get("scheme") or ""),
                key_type=str(enc.get("key_type") or ""),
                epoch=epoch,
                params={str(k): str(v) for k, v in params.items()},
            )
        )
    req.message_key = str(doc.get("message_key") or "")
    return req


def _encryption_json(enc: conversation_pb2.EncryptionMetadata) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {"scheme": enc.scheme, "key_type": enc.key_type}
    if enc.epoch:
        out["epoch"] = enc.epoch
    if enc.params:
        out["params"] = dict(enc.params)
    return out


def message_json(m: conversation_pb2.ConversationMessage) -> dict[str, JsonValue]:
    """A stored message as a ``message`` frame."""
    return {
        "op": "message",
        "conversation": m.conversation_id,
        "id": str(m.id),
        "sender": m.sender,
        "content_type": m.content_type,
        "data": base64.b64encode(m.data).decode(),
        "encryption": _encryption_json(m.encryption_metadata),
    }


def conversation_json(c: conversation_pb2.Conversation) -> dict[str, JsonValue]:
    return {
        "id": c.conversation_id,
        "type": _TYPES.get(c.type, ""),
        "owner": c.owner,
        "participants": [
            {"agent": p.agent, "role": _ROLES.get(p.role, "")} for p in c.participants
        ],
        "metadata": dict(c.metadata),
        "key_epoch": c.key_epoch,
        "closed": c.HasField("closed_time"),
    }


def _attr(d: Delivery, name: str) -> str:
    attrs = d.event.attributes
    return attrs[name].ce_string if name in attrs else ""


def chat_frame(d: Delivery) -> dict[str, JsonValue]:
    """One delivery of a joined room as its chat frame."""
    ev = d.event
    cid = _attr(d, "convid")
    if ev.type == "conversation.message":
        enc = pb.EncryptionMetadata(scheme=_attr(d, "encscheme"), key_type=_attr(d, "enckeytype"))
        epoch = _attr(d, "encepoch")
        enc.epoch = int(epoch) if epoch.isdigit() else 0
        if _attr(d, "encparams"):
            enc.params.update(cast("dict[str, str]", loads(_attr(d, "encparams"))))
        return message_json(
            pb.ConversationMessage(
                id=d.id,
                conversation_id=cid,
                sender=_attr(d, "convsender"),
                data=ev.binary_data,
                content_type=_attr(d, "datacontenttype"),
                encryption_metadata=enc,
            )
        )
    body = cast("dict[str, JsonValue]", loads(ev.text_data) if ev.text_data else {})
    frame: dict[str, JsonValue] = {"op": _FRAMES.get(ev.type, "conversation")}
    frame["conversation"] = cid
    if frame["op"] == "conversation":
        frame["event"] = ev.type.removeprefix("conversation.")
    for k, v in body.items():
        if k != "conversation_id":
            frame[k] = v
    if ev.type == "conversation.typing":
        frame["typing"] = body.get("typing") == "true"
    if ev.type == "conversation.member_removed":
        frame["removed"] = True
    return frame
