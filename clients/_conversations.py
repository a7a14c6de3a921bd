"""``client.conversations``: direct, group and broadcast conversations, end-to-end encrypted
by this client (the broker stores ciphertext and public keys, never plaintext or private keys).

Example::

    async with Client(target, api_key=ann_key, keystore="ann.keys") as ann:
        conv = await ann.conversations.create("group", ["bob", "cy"])
        await ann.conversations.send(conv.id, {"text": "hello"})
        async for m in ann.conversations.history(conv.id):
            print(m.sender, m.data)

Keys (see :mod:`clients._e2e` for the schemes):

- Each agent's keystore (:class:`~clients.Keystore`) holds its identity and X25519 keys; the
  client publishes the public key, signed, on first use. Reading another agent's key checks
  the signature and pins its identity key on first use: a swapped key is :class:`KeyMismatch`.
- Direct: SealedBox to the recipient plus a copy to the sender (scheme ``x25519-sealedbox``).
- Group and broadcast: XChaCha20-Poly1305 under the group key of the current epoch (scheme
  ``xchacha20-poly1305``, key type ``group``, the epoch in ``encryption_metadata``). Creating
  seals epoch 1 to every participant; inviting seals the current key to the new members.
- Who rotates: removing a member, the remover's client (an owner or admin, a remaining
  member) makes a new key at once and seals it to every remaining member. When a member
  leaves by itself, the owner's client rotates: before its next send, while it iterates
  :meth:`Conversations.messages`, or on :meth:`Conversations.rotate`. Before every group send
  the client reads the conversation's lifecycle events since the last it saw; a departure
  after the last rotation means the key is stale: the owner's client rotates then, any other
  member's send fails with ``STALE_EPOCH`` (:class:`FailedPrecondition`) rather than encrypt
  to a key the departed member holds. One rotator (the owner) avoids two members sealing two
  different keys for the same epoch.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from lockgate.broker.v1 import conversation_pb2
from lockgate.clients._codec import encode_payload, to_timestamp
from lockgate.clients._conversation_epochs import DEPARTURES, ConversationState, GroupKeys
from lockgate.clients._conversation_keys import ConversationRpc, KeyDirectory
from lockgate.clients._conversation_models import (
    EPOCH0,
    KIND,
    ROLE,
    AgentKey,
    Conversation,
    ConversationKind,
    ConversationMessage,
    Participant,
    Presence,
    Receipt,
    SendResult,
    receipt_of,
    time_of,
)
from lockgate.clients._conversation_sealing import Sealing
from lockgate.clients._errors import DecryptionError, KeyMismatch, NotFound, PermissionDenied

if TYPE_CHECKING:
    from lockgate.clients._client import Client
    from lockgate.clients._keystore import Keystore

__all__ = [
    "AgentKey",
    "Conversation",
    "ConversationMessage",
    "Conversations",
    "Participant",
    "Presence",
    "Receipt",
    "SendResult",
]

pb = conversation_pb2


class Conversations:
    """``client.conversations`` (see the module's docstring)."""

    def __init__(self, client: Client, keystore: Keystore | None) -> None:
        self._client = client
        self._keystore = keystore
        self._states: dict[str, ConversationState] = {}
        self._call = ConversationRpc(client)
        self._directory = KeyDirectory(self._call, keystore)
        self._group_keys = GroupKeys(client, self._call, self._directory, self.get)
        self._sealing = Sealing(self._directory, self._group_keys)

    # -- plumbing -------------------------------------------------------------------------------

    def _state(self, conversation: Conversation) -> ConversationState:
        st = self._states.get(conversation.id)
        if st is None:
            st = self._states[conversation.id] = ConversationState(conversation)
        else:
            st.conversation = conversation
        return st

    async def _load(self, conversation_id: str) -> ConversationState:
        st = self._states.get(conversation_id)
        if st is None:
            st = self._state(await self.get(conversation_id))
        return st

    # -- the key directory ----------------------------------------------------------------------

    async def publish_key(self) -> AgentKey:
        """Put this agent's X25519 public key, signed by its identity key, in the directory."""
        return await self._directory.publish()

    async def keys(self, agents: Sequence[str], *, fresh: bool = True) -> dict[str, AgentKey]:
        """Verified directory entries of ``agents`` (those without one are left out): each
        signature checked and each identity key pinned on first use, so a key the directory
        swapped raises :class:`KeyMismatch`. ``fresh=False`` may answer from this client's
        memory of entries it already verified."""
        return await self._directory.keys(agents, fresh=fresh)

    def forget_pin(self, agent: str) -> None:
        """Forget ``agent``'s pinned identity key (after it really made new keys)."""
        self._directory.forget_pin(agent)

    # -- conversations --------------------------------------------------------------------------

    async def create(
        self,
        type: ConversationKind,
        participants: Sequence[str],
        *,
        metadata: dict[str, str] | None = None,
        history_for_new_members: bool = False,
        open: bool = False,
        encrypted: bool = True,
    ) -> Conversation:
        """Create a conversation owned by this agent; ``participants`` are the others. An
        encrypted group or broadcast gets its first group key (epoch 1), sealed to everyone."""
        if encrypted:
            me = await self._directory.ready()
            await self._directory.keys_of_all([me, *participants])
        resp = await self._call(
            "CreateConversation",
            pb.CreateConversationRequest(
                type=KIND[type],
                participants=list(participants),
                metadata=metadata or {},
                history_for_new_members=history_for_new_members,
                open=open,
            ),
            pb.CreateConversationResponse,
        )
        conv = Conversation._of(resp.conversation)
        st = self._state(conv)
        if encrypted and type != "direct":
            await self._group_keys.seal_new_epoch(st)
        return st.conversation

    async def get(self, conversation_id: str) -> Conversation:
        """One conversation this agent takes part in."""
        resp = await self._call(
            "GetConversation",
            pb.GetConversationRequest(conversation_id=conversation_id),
            pb.GetConversationResponse,
        )
        return self._state(Conversation._of(resp.conversation)).conversation

    async def list(self, *, include_closed: bool = False) -> list[Conversation]:
        """The conversations this agent takes part in, oldest first."""
        out: list[Conversation] = []
        request = pb.ListConversationsRequest(include_closed=include_closed)
        while True:
            resp = await self._call("ListConversations", request, pb.ListConversationsResponse)
            out.extend(Conversation._of(c) for c in resp.conversations)
            if not resp.next_page_token:
                return out
            request.page_token = resp.next_page_token

    async def invite(
        self, conversation_id: str, agents: Sequence[str], *, role: str = "member"
    ) -> Conversation:
        """Add ``agents``; in an encrypted group the current key is sealed to them."""
        st = await self._load(conversation_id)
        encrypted = st.conversation.key_epoch > 0
        if encrypted:
            await self._directory.ready()
            await self._directory.keys_of_all(agents)
        resp = await self._call(
            "InviteMembers",
            pb.InviteMembersRequest(
                conversation_id=conversation_id, agents=list(agents), role=ROLE[role]
            ),
            pb.InviteMembersResponse,
        )
        st = self._state(Conversation._of(resp.conversation))
        if encrypted:
            epoch = st.conversation.key_epoch
            key = await self._group_keys.group_key(st, epoch)
            await self._group_keys.put_keys(st, epoch, key, agents)
        return st.conversation

    async def join(
        self, conversation_id: str, *, last_n: int = 0, since: dt.datetime | None = None
    ) -> tuple[Conversation, builtins.list[ConversationMessage]]:
        """Join an open room (or attach to a conversation this agent is in), with the last
        ``last_n`` messages or those since ``since``, decrypted where this agent can."""
        request = pb.JoinConversationRequest(
            conversation_id=conversation_id, history=pb.HistoryOnJoin(last_n=last_n)
        )
        if since is not None:
            request.history.since_time.CopyFrom(to_timestamp(since))
        resp = await self._call("JoinConversation", request, pb.JoinConversationResponse)
        st = self._state(Conversation._of(resp.conversation))
        return st.conversation, [
            await self._open(st, ConversationMessage._of(m)) for m in resp.messages
        ]

    async def leave(self, conversation_id: str) -> None:
        """Leave; the owner's client rotates the group key (see the module's docstring)."""
        await self._call(
            "LeaveConversation",
            pb.LeaveConversationRequest(conversation_id=conversation_id),
            pb.LeaveConversationResponse,
        )

    async def remove(self, conversation_id: str, agent: str) -> Conversation:
        """Remove ``agent`` (owner or admin); an encrypted group gets a new key at once,
        sealed to every remaining member, so ``agent`` cannot read what is sent next."""
        resp = await self._call(
            "RemoveMember",
            pb.RemoveMemberRequest(conversation_id=conversation_id, agent=agent),
            pb.RemoveMemberResponse,
        )
        st = self._state(Conversation._of(resp.conversation))
        if st.conversation.key_epoch > 0:
            await self._group_keys.seal_new_epoch(st)
        return st.conversation

    async def rotate(self, conversation_id: str) -> int:
        """Make a new group key, seal it to every current participant; the new epoch."""
        st = self._state(await self.get(conversation_id))
        await self._group_keys.seal_new_epoch(st)
        return st.conversation.key_epoch

    async def close(self, conversation_id: str) -> None:
        """Close it (owner only): no more messages; the history stays."""
        await self._call(
            "CloseConversation",
            pb.CloseConversationRequest(conversation_id=conversation_id),
            pb.CloseConversationResponse,
        )

    # -- messages -------------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        data: object,
        *,
        message_key: str = "",
        encrypt: bool = True,
    ) -> SendResult:
        """Encrypt ``data`` (a dict, str, bytes, pydantic model or dataclass, encoded as
        ``client.publish`` does) for the conversation and send it."""
        payload, content_type = encode_payload(data)
        plaintext = payload.encode() if isinstance(payload, str) else payload
        st = await self._load(conversation_id)
        enc = pb.EncryptionMetadata()
        body = plaintext
        if encrypt:
            body, enc = await self._sealing.seal(st, plaintext)
        resp = await self._call(
            "SendMessage",
            pb.SendMessageRequest(
                conversation_id=conversation_id,
                data=body,
                content_type=content_type,
                encryption_metadata=enc,
                message_key=message_key,
            ),
            pb.SendMessageResponse,
        )
        return SendResult(resp.id, resp.duplicate)

    async def decrypt(self, message: ConversationMessage) -> ConversationMessage:
        """``message`` with its plaintext; :class:`DecryptionError` when it does not open."""
        if not message.scheme:
            return dataclasses.replace(message, plaintext=message.ciphertext, error=None)
        st = await self._load_or_stub(message.conversation_id)
        return await self._sealing.open(st, message)

    async def _load_or_stub(self, conversation_id: str) -> ConversationState:
        st = self._states.get(conversation_id)
        if st is not None:
            return st
        try:
            return await self._load(conversation_id)
        except (PermissionDenied, NotFound):
            # A departed member still decrypts with the keys it kept (or learns it cannot).
            stub = Conversation(conversation_id, "group", "", (), {}, EPOCH0, 0)
            return self._state(stub)

    async def _open(
        self, st: ConversationState, message: ConversationMessage
    ) -> ConversationMessage:
        try:
            return await self.decrypt(message)
        except (DecryptionError, KeyMismatch) as exc:
            return dataclasses.replace(message, error=exc)

    async def history(
        self,
        conversation_id: str,
        *,
        after_id: int = 0,
        since: dt.datetime | None = None,
        last_n: int = 0,
        decrypt: bool = True,
        page_size: int = 100,
    ) -> AsyncIterator[ConversationMessage]:
        """The messages this agent may read, oldest first, decrypted (``decrypt=False``: as
        stored). A message that does not decrypt comes with ``error`` set, never an
        exception, so one bad message does not hide the others."""
        st = await self._load(conversation_id)
        request = pb.GetHistoryRequest(
            conversation_id=conversation_id,
            after_id=after_id,
            page_size=page_size,
            last_n=last_n,
        )
        if since is not None:
            request.since_time.CopyFrom(to_timestamp(since))
        while True:
            resp = await self._call("GetHistory", request, pb.GetHistoryResponse)
            for m in resp.messages:
                msg = ConversationMessage._of(m)
                yield await self._open(st, msg) if decrypt else msg
            if not resp.next_page_token or last_n:
                return
            request.page_token = resp.next_page_token

    async def messages(
        self, conversation_id: str, *, start: str | int = "new"
    ) -> AsyncIterator[ConversationMessage]:
        """New messages as they arrive, decrypted (``error`` set on those that do not). The
        owner's client also keeps the group key: it rotates it when it sees a member leave,
        and seals it to an agent that joined an open room by itself."""
        st = await self._load(conversation_id)
        me = await self._directory.ready() if self._keystore is not None else ""
        msg_subject = f"$conv.{conversation_id}.msg"
        async for m in self._client.subscribe(f"$conv.{conversation_id}.>", start=start):
            if m.subject == msg_subject:
                yield await self._open(st, ConversationMessage._of_event(m.id, m.event))
            elif not me or st.conversation.owner != me:
                continue
            elif m.type in DEPARTURES:
                await self._group_keys.sync(st)
                await self._group_keys.seal_new_epoch(st, only_if_stale=True)
            elif m.type == "conversation.member_joined":
                await self._group_keys.share_with_joiner(st, m.data)

    # -- receipts, typing, presence -------------------------------------------------------------

    async def mark(
        self, conversation_id: str, *, read_id: int = 0, delivered_id: int = 0
    ) -> Receipt:
        """Move this agent's receipts forward: read (and so delivered) up to ``read_id``."""
        resp = await self._call(
            "MarkReceipts",
            pb.MarkReceiptsRequest(
                conversation_id=conversation_id, read_id=read_id, delivered_id=delivered_id
            ),
            pb.MarkReceiptsResponse,
        )
        return receipt_of(resp.receipt)

    async def receipts(self, conversation_id: str) -> builtins.list[Receipt]:
        """Per participant, up to where it received and read ("who read up to where")."""
        resp = await self._call(
            "GetReceipts",
            pb.GetReceiptsRequest(conversation_id=conversation_id),
            pb.GetReceiptsResponse,
        )
        return [receipt_of(r) for r in resp.receipts]

    async def typing(self, conversation_id: str, typing: bool = True) -> None:
        """Start (or stop) a typing indicator; never stored, it ends by itself."""
        await self._call(
            "SetTyping",
            pb.SetTypingRequest(conversation_id=conversation_id, typing=typing),
            pb.SetTypingResponse,
        )

    async def presence(self, conversation_id: str) -> builtins.list[Presence]:
        """Which participants are online."""
        resp = await self._call(
            "GetPresence",
            pb.GetPresenceRequest(conversation_id=conversation_id),
            pb.GetPresenceResponse,
        )
        return [
            Presence(p.agent, p.status == pb.PRESENCE_STATUS_ONLINE, time_of(p.since_time))
            for p in resp.presence
        ]
