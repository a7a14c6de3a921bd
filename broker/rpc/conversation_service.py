"""``ConversationService``: conversations, their messages, keys, receipts, typing and
presence, over :class:`broker.conversations.Conversations` (whose rules decide who may)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import cast

from google.protobuf import message

from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.errors import InvalidArgument
from lockgate.broker.node import Broker
from lockgate.broker.rpc import (
    Context,
    Servicer,
    message_class,
    page_after,
    page_size,
    timestamp_ms,
    unary,
)
from lockgate.broker.store import ConversationRecord, ReceiptRecord
from lockgate.broker.v1 import broker_pb2, conversation_pb2

__all__ = [
    "ConversationService",
    "call_in_process",
    "conversation_message",
    "message_of",
    "response_class",
]

pb = conversation_pb2
_TYPES = {
    pb.CONVERSATION_TYPE_DIRECT: "direct",
    pb.CONVERSATION_TYPE_GROUP: "group",
    pb.CONVERSATION_TYPE_BROADCAST: "broadcast",
}
_TYPE_OF = {v: k for k, v in _TYPES.items()}
_ROLE_OF = {
    "owner": pb.PARTICIPANT_ROLE_OWNER,
    "admin": pb.PARTICIPANT_ROLE_ADMIN,
    "member": pb.PARTICIPANT_ROLE_MEMBER,
}
#: EncryptionMetadata's fields as event attributes (what a subscriber reads).
ENC_ATTRS = ("encscheme", "enckeytype", "encepoch", "encparams")


def conversation_message(rec: ConversationRecord) -> conversation_pb2.Conversation:
    m = pb.Conversation(
        conversation_id=rec.conversation_id,
        org=rec.org,
        type=_TYPE_OF[rec.kind],
        owner=rec.owner,
        metadata=dict(rec.metadata),
        key_epoch=rec.key_epoch,
        history_for_new_members=rec.history_for_new_members,
        open=rec.open,
        subject_prefix=f"$conv.{rec.conversation_id}",
    )
    m.created_time.FromMilliseconds(rec.created_ms)
    if rec.closed_ms:
        m.closed_time.FromMilliseconds(rec.closed_ms)
    for p in rec.members:
        part = m.participants.add(agent=p.agent, role=_ROLE_OF[p.role], invited_by=p.invited_by)
        part.joined_time.FromMilliseconds(p.joined_ms)
    return m


def _attr(ev: broker_pb2.StoredEvent, name: str) -> str:
    attrs = ev.event.attributes
    return attrs[name].ce_string if name in attrs else ""


def message_of(ev: broker_pb2.StoredEvent) -> conversation_pb2.ConversationMessage:
    """A stored ``$conv.<id>.msg`` event as a :class:`ConversationMessage`."""
    enc = pb.EncryptionMetadata(scheme=_attr(ev, "encscheme"), key_type=_attr(ev, "enckeytype"))
    epoch = _attr(ev, "encepoch")
    enc.epoch = int(epoch) if epoch.isdigit() else 0
    params = _attr(ev, "encparams")
    if params:
        enc.params.update(json.loads(params))
    m = pb.ConversationMessage(
        id=ev.id,
        conversation_id=_attr(ev, "convid"),
        sender=_attr(ev, "convsender"),
        data=ev.event.binary_data,
        content_type=_attr(ev, "datacontenttype"),
        encryption_metadata=enc,
        message_key=ev.event.id,
    )
    m.sent_time.CopyFrom(ev.stored_time)
    return m


def _encryption(enc: conversation_pb2.EncryptionMetadata) -> dict[str, str]:
    if len(enc.params) > 8 or any(len(k) + len(v) > 1024 for k, v in enc.params.items()):
        raise InvalidArgument("encryption_metadata.params holds at most 8 entries of 1 KiB")
    out = {"encscheme": enc.scheme, "enckeytype": enc.key_type}
    if enc.epoch:
        out["encepoch"] = str(enc.epoch)
    if enc.params:
        out["encparams"] = json.dumps(dict(enc.params), sort_keys=True)
    return out


def _receipt(r: ReceiptRecord) -> conversation_pb2.Receipt:
    m = pb.Receipt(agent=r.agent, delivered_id=r.delivered_id, read_id=r.read_id)
    m.updated_time.FromMilliseconds(r.updated_ms)
    return m


class ConversationService(Servicer):
    """``ConversationService`` (see ``protos/broker/v1/conversation.proto``)."""

    SERVICE = "broker.v1.ConversationService"

    @unary()
    async def CreateConversation(
        self, request: conversation_pb2.CreateConversationRequest, p: Principal, context: Context
    ) -> conversation_pb2.CreateConversationResponse:
        rec = await self.broker.conversations.create(
            p,
            _TYPES.get(request.type, ""),
            list(request.participants),
            dict(request.metadata),
            history_for_new_members=request.history_for_new_members,
            open_=request.open,
        )
        return pb.CreateConversationResponse(conversation=conversation_message(rec))

    @unary()
    async def GetConversation(
        self, request: conversation_pb2.GetConversationRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetConversationResponse:
        rec = self.broker.conversations.conversation(p, request.conversation_id)
        return pb.GetConversationResponse(conversation=conversation_message(rec))

    @unary()
    async def ListConversations(
        self, request: conversation_pb2.ListConversationsRequest, p: Principal, context: Context
    ) -> conversation_pb2.ListConversationsResponse:
        recs = self.broker.conversations.mine(p, request.include_closed)
        start = page_after(request.page_token)
        size = page_size(request.page_size)
        page = recs[start : start + size]
        more = start + size < len(recs)
        return pb.ListConversationsResponse(
            conversations=[conversation_message(r) for r in page],
            next_page_token=str(start + size) if more else "",
        )

    @unary()
    async def InviteMembers(
        self, request: conversation_pb2.InviteMembersRequest, p: Principal, context: Context
    ) -> conversation_pb2.InviteMembersResponse:
        role = "admin" if request.role == pb.PARTICIPANT_ROLE_ADMIN else "member"
        if request.role == pb.PARTICIPANT_ROLE_OWNER:
            raise InvalidArgument("a conversation has one owner: invite as member or admin")
        rec = await self.broker.conversations.invite(
            p, request.conversation_id, list(request.agents), role
        )
        return pb.InviteMembersResponse(conversation=conversation_message(rec))

    @unary()
    async def JoinConversation(
        self, request: conversation_pb2.JoinConversationRequest, p: Principal, context: Context
    ) -> conversation_pb2.JoinConversationResponse:
        convs = self.broker.conversations
        rec = await convs.join(p, request.conversation_id)
        h = request.history
        out = pb.JoinConversationResponse(conversation=conversation_message(rec))
        since = timestamp_ms(h.since_time, "since_time") if h.HasField("since_time") else 0
        if h.last_n or since:
            events, _ = await convs.history(
                p, rec.conversation_id, start_ms=since, limit=1000, last_n=h.last_n
            )
            out.messages.extend(message_of(e) for e in events)
        return out

    @unary()
    async def LeaveConversation(
        self, request: conversation_pb2.LeaveConversationRequest, p: Principal, context: Context
    ) -> conversation_pb2.LeaveConversationResponse:
        await self.broker.conversations.leave(p, request.conversation_id)
        return pb.LeaveConversationResponse()

    @unary()
    async def RemoveMember(
        self, request: conversation_pb2.RemoveMemberRequest, p: Principal, context: Context
    ) -> conversation_pb2.RemoveMemberResponse:
        rec = await self.broker.conversations.remove(p, request.conversation_id, request.agent)
        return pb.RemoveMemberResponse(conversation=conversation_message(rec))

    @unary()
    async def CloseConversation(
        self, request: conversation_pb2.CloseConversationRequest, p: Principal, context: Context
    ) -> conversation_pb2.CloseConversationResponse:
        await self.broker.conversations.close(p, request.conversation_id)
        return pb.CloseConversationResponse()

    @unary()
    async def SendMessage(
        self, request: conversation_pb2.SendMessageRequest, p: Principal, context: Context
    ) -> conversation_pb2.SendMessageResponse:
        sent = await self.broker.conversations.send(
            p,
            request.conversation_id,
            request.data,
            request.content_type,
            _encryption(request.encryption_metadata),
            request.message_key,
        )
        return pb.SendMessageResponse(id=sent.id, duplicate=sent.duplicate)

    @unary()
    async def GetHistory(
        self, request: conversation_pb2.GetHistoryRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetHistoryResponse:
        since = (
            timestamp_ms(request.since_time, "since_time") if request.HasField("since_time") else 0
        )
        events, cursor = await self.broker.conversations.history(
            p,
            request.conversation_id,
            after_id=max(request.after_id, page_after(request.page_token)),
            start_ms=since,
            limit=page_size(request.page_size),
            last_n=request.last_n,
        )
        return pb.GetHistoryResponse(
            messages=[message_of(e) for e in events],
            next_page_token=str(cursor) if cursor else "",
        )

    @unary()
    async def PublishKey(
        self, request: conversation_pb2.PublishKeyRequest, p: Principal, context: Context
    ) -> conversation_pb2.PublishKeyResponse:
        rec = await self.broker.conversations.publish_key(
            p, request.public_key, request.identity_key, request.signature
        )
        key = pb.AgentKey(
            agent=rec.agent,
            public_key=rec.public_key,
            identity_key=rec.identity_key,
            signature=rec.signature,
        )
        key.published_time.FromMilliseconds(rec.published_ms)
        return pb.PublishKeyResponse(key=key)

    @unary()
    async def GetKeys(
        self, request: conversation_pb2.GetKeysRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetKeysResponse:
        out = pb.GetKeysResponse()
        for rec in await self.broker.conversations.keys(p, list(request.agents)):
            key = out.keys.add(
                agent=rec.agent,
                public_key=rec.public_key,
                identity_key=rec.identity_key,
                signature=rec.signature,
            )
            key.published_time.FromMilliseconds(rec.published_ms)
        return out

    @unary()
    async def PutGroupKeys(
        self, request: conversation_pb2.PutGroupKeysRequest, p: Principal, context: Context
    ) -> conversation_pb2.PutGroupKeysResponse:
        epoch = await self.broker.conversations.put_group_keys(
            p,
            request.conversation_id,
            request.epoch,
            [(e.agent, e.sealed_key, e.signature) for e in request.envelopes],
        )
        return pb.PutGroupKeysResponse(key_epoch=epoch)

    @unary()
    async def GetGroupKeys(
        self, request: conversation_pb2.GetGroupKeysRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetGroupKeysResponse:
        recs, epoch = await self.broker.conversations.group_keys(
            p, request.conversation_id, request.min_epoch
        )
        out = pb.GetGroupKeysResponse(key_epoch=epoch)
        for r in recs:
            e = out.envelopes.add(
                agent=r.agent,
                sealed_key=r.sealed_key,
                epoch=r.epoch,
                sealed_by=r.sealed_by,
                signature=r.signature,
            )
            e.created_time.FromMilliseconds(r.created_ms)
        return out

    @unary()
    async def MarkReceipts(
        self, request: conversation_pb2.MarkReceiptsRequest, p: Principal, context: Context
    ) -> conversation_pb2.MarkReceiptsResponse:
        r = await self.broker.conversations.mark(
            p, request.conversation_id, request.delivered_id, request.read_id
        )
        return pb.MarkReceiptsResponse(receipt=_receipt(r))

    @unary()
    async def GetReceipts(
        self, request: conversation_pb2.GetReceiptsRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetReceiptsResponse:
        got = await self.broker.conversations.receipts(p, request.conversation_id)
        return pb.GetReceiptsResponse(receipts=[_receipt(r) for r in got])

    @unary()
    async def SetTyping(
        self, request: conversation_pb2.SetTypingRequest, p: Principal, context: Context
    ) -> conversation_pb2.SetTypingResponse:
        await self.broker.conversations.set_typing(p, request.conversation_id, request.typing)
        return pb.SetTypingResponse()

    @unary()
    async def GetPresence(
        self, request: conversation_pb2.GetPresenceRequest, p: Principal, context: Context
    ) -> conversation_pb2.GetPresenceResponse:
        out = pb.GetPresenceResponse()
        for agent, st in await self.broker.conversations.presence_of(p, request.conversation_id):
            m = out.presence.add(
                agent=agent,
                status=pb.PRESENCE_STATUS_ONLINE if st.online else pb.PRESENCE_STATUS_OFFLINE,
            )
            if st.since_ms:
                m.since_time.FromMilliseconds(st.since_ms)
        return out


_SERVICE = conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"]


def response_class(method: str) -> type[message.Message]:
    """The response message class of ``ConversationService.<method>``."""
    return message_class(_SERVICE.methods_by_name[method].output_type)  # type: ignore[no-any-return]


async def call_in_process(
    broker: Broker, principal: Principal, method: str, request: message.Message
) -> message.Message:
    """Runs one method for an authorized caller without gRPC (the in-process gateways): the
    servicer's own body, so each surface applies the same rules and mapping."""
    body: Callable[..., Awaitable[message.Message]] = getattr(
        ConversationService, method
    ).__wrapped__
    servicer = ConversationService(broker, cast(Authenticator, None))
    return await body(servicer, request, principal, None)
