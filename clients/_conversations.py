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

import asyncio
import builtins
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message as _Message

from lockgate.broker.v1 import conversation_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._codec import encode_payload, to_timestamp
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
from lockgate.clients._errors import (
    DecryptionError,
    FailedPrecondition,
    InvalidArgument,
    KeyMismatch,
    NotFound,
    PermissionDenied,
)

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
SERVICE = "/broker.v1.ConversationService/"
_R = TypeVar("_R", bound=_Message)
_DEPARTURES = ("conversation.member_left", "conversation.member_removed")


@dataclass
class _State:
    """What this client knows of one conversation."""

    conversation: Conversation
    events_after: int = 0
    stale: bool = False
    keys: dict[int, bytes] = field(default_factory=dict)
    running: asyncio.Future[None] | None = None
    pending: asyncio.Future[None] | None = None
    rotating: asyncio.Lock = field(default_factory=asyncio.Lock)


class Conversations:
    """``client.conversations`` (see the module's docstring)."""

    def __init__(self, client: Client, keystore: Keystore | None) -> None:
        self._client = client
        self._keystore = keystore
        self._states: dict[str, _State] = {}
        self._keys: dict[str, AgentKey] = {}
        self._me = ""

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(self, method: str, request: _Message, response_type: type[_R]) -> _R:
        unary: Callable[..., Awaitable[_R]] = self._client._unary
        return await unary(SERVICE + method, request, response_type)

    def _ks(self) -> Keystore:
        if self._keystore is None:
            raise FailedPrecondition(
                "end-to-end encryption needs a keystore",
                hint="pass keystore='path/to/agent.keys' to Client(...)",
            )
        return self._keystore

    def _crypto(self) -> Any:
        from lockgate.clients import _e2e

        return _e2e

    async def _ready(self) -> str:
        """Publish this agent's key (once per client) and learn the agent's name."""
        if not self._me:
            await self.publish_key()
        return self._me

    def _state(self, conversation: Conversation) -> _State:
        st = self._states.get(conversation.id)
        if st is None:
            st = self._states[conversation.id] = _State(conversation)
        else:
            st.conversation = conversation
        return st

    async def _load(self, conversation_id: str) -> _State:
        st = self._states.get(conversation_id)
        if st is None:
            st = self._state(await self.get(conversation_id))
        return st

    # -- the key directory ----------------------------------------------------------------------

    async def publish_key(self) -> AgentKey:
        """Put this agent's X25519 public key, signed by its identity key, in the directory."""
        ks = self._ks()
        e2e = self._crypto()
        resp = await self._call(
            "PublishKey",
            pb.PublishKeyRequest(
                public_key=ks.public_key,
                identity_key=ks.identity_key,
                signature=e2e.sign_directory_entry(ks.identity, ks.public_key),
            ),
            pb.PublishKeyResponse,
        )
        ks.bind(resp.key.agent)
        ks.pin(resp.key.agent, ks.identity_key)
        self._me = resp.key.agent
        key = AgentKey(
            resp.key.agent, ks.public_key, ks.identity_key, time_of(resp.key.published_time)
        )
        self._keys[self._me] = key
        return key

    async def keys(self, agents: Sequence[str], *, fresh: bool = True) -> dict[str, AgentKey]:
        """Verified directory entries of ``agents`` (those without one are left out): each
        signature checked and each identity key pinned on first use, so a key the directory
        swapped raises :class:`KeyMismatch`. ``fresh=False`` may answer from this client's
        memory of entries it already verified."""
        ks = self._ks()
        e2e = self._crypto()
        want = [a for a in dict.fromkeys(agents) if fresh or a not in self._keys]
        if want:
            resp = await self._call("GetKeys", pb.GetKeysRequest(agents=want), pb.GetKeysResponse)
            for k in resp.keys:
                e2e.verify_directory_entry(k.agent, k.public_key, k.identity_key, k.signature)
                ks.pin(k.agent, k.identity_key)
                self._keys[k.agent] = AgentKey(
                    k.agent, k.public_key, k.identity_key, time_of(k.published_time)
                )
        return {a: self._keys[a] for a in agents if a in self._keys}

    async def _keys_of_all(
        self, agents: Sequence[str], *, fresh: bool = True
    ) -> dict[str, AgentKey]:
        got = await self.keys(agents, fresh=fresh)
        missing = [a for a in agents if a not in got]
        if missing:
            raise FailedPrecondition(
                f"{', '.join(missing)} published no key in the directory, so nothing can be "
                "sealed to them",
                hint="each agent's client publishes its key on first use "
                "(client.conversations.publish_key())",
            )
        return got

    def forget_pin(self, agent: str) -> None:
        """Forget ``agent``'s pinned identity key (after it really made new keys)."""
        self._ks().forget(agent)
        self._keys.pop(agent, None)

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
            me = await self._ready()
            await self._keys_of_all([me, *participants])
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
            await self._seal_new_epoch(st)
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
            await self._ready()
            await self._keys_of_all(agents)
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
            key = await self._group_key(st, epoch)
            await self._put_keys(st, epoch, key, agents)
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
            await self._seal_new_epoch(st)
        return st.conversation

    async def rotate(self, conversation_id: str) -> int:
        """Make a new group key, seal it to every current participant; the new epoch."""
        st = self._state(await self.get(conversation_id))
        await self._seal_new_epoch(st)
        return st.conversation.key_epoch

    async def close(self, conversation_id: str) -> None:
        """Close it (owner only): no more messages; the history stays."""
        await self._call(
            "CloseConversation",
            pb.CloseConversationRequest(conversation_id=conversation_id),
            pb.CloseConversationResponse,
        )

    # -- group keys -----------------------------------------------------------------------------

    async def _seal_new_epoch(self, st: _State, *, only_if_stale: bool = False) -> None:
        # One rotation at a time per conversation in this client: two concurrent ones would
        # both seal epoch N+1, the second overwriting the first's envelopes.
        async with st.rotating:
            if only_if_stale and not st.stale:
                return
            e2e = self._crypto()
            conv = st.conversation
            epoch = conv.key_epoch + 1
            key: bytes = e2e.new_group_key()
            await self._put_keys(st, epoch, key, conv.agents)
            st.keys[epoch] = key
            st.stale = False
            st.conversation = dataclasses.replace(st.conversation, key_epoch=epoch)

    async def _put_keys(self, st: _State, epoch: int, key: bytes, agents: Sequence[str]) -> None:
        e2e = self._crypto()
        ks = self._ks()
        await self._ready()
        found = await self._keys_of_all(agents)
        cid = st.conversation.id
        envelopes = []
        for agent in agents:
            sealed, signature = e2e.seal_group_key(
                ks.identity, cid, epoch, agent, found[agent].public_key, key
            )
            envelopes.append(
                pb.GroupKeyEnvelope(agent=agent, sealed_key=sealed, signature=signature)
            )
        await self._call(
            "PutGroupKeys",
            pb.PutGroupKeysRequest(conversation_id=cid, epoch=epoch, envelopes=envelopes),
            pb.PutGroupKeysResponse,
        )

    async def _group_key(self, st: _State, epoch: int) -> bytes:
        key = st.keys.get(epoch)
        if key is not None:
            return key
        e2e = self._crypto()
        ks = self._ks()
        cid = st.conversation.id
        try:
            resp = await self._call(
                "GetGroupKeys",
                pb.GetGroupKeysRequest(conversation_id=cid, min_epoch=epoch),
                pb.GetGroupKeysResponse,
            )
        except (PermissionDenied, NotFound) as exc:
            raise DecryptionError(
                f"no group key of epoch {epoch} of {cid}: you are not a participant now",
                hint=str(exc),
            ) from exc
        me = await self._ready()
        for env in resp.envelopes:
            if env.epoch in st.keys:
                continue
            sealer = (await self._keys_of_all([env.sealed_by], fresh=False))[env.sealed_by]
            st.keys[env.epoch] = e2e.open_group_key(
                ks.private,
                sealer.identity_key,
                cid,
                env.epoch,
                me,
                env.sealed_key,
                env.signature,
                env.sealed_by,
            )
        key = st.keys.get(epoch)
        if key is None:
            raise DecryptionError(
                f"you hold no group key of epoch {epoch} of {cid} (it was sealed before you "
                "joined or after you left)"
            )
        return key

    async def _sync(self, st: _State) -> None:
        """Read the conversation's lifecycle events since the last seen: a departure after
        the last key rotation makes the key stale.

        Concurrent sends share one read, but only one that starts after they were called
        (the next one, queued behind a read in flight), so none misses an event stored
        before it was called."""
        if st.pending is None:
            st.pending = asyncio.ensure_future(self._sync_next(st, st.running))
        await asyncio.shield(st.pending)

    async def _sync_next(self, st: _State, before: asyncio.Future[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        st.running, st.pending = st.pending, None
        cid = st.conversation.id
        changed = False
        async for ev in self._client.query_events(
            f"$conv.{cid}.events", after_id=st.events_after, page_size=1000
        ):
            st.events_after = ev.id
            changed = True
            if ev.type in _DEPARTURES:
                st.stale = True
            elif ev.type == "conversation.key_rotated":
                st.stale = False
        if changed:
            self._state(await self.get(cid))

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
            body, enc = await self._encrypt(st, plaintext)
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

    async def _encrypt(self, st: _State, plaintext: bytes) -> tuple[bytes, Any]:
        e2e = self._crypto()
        me = await self._ready()
        conv = st.conversation
        if conv.type == "direct":
            other = next((a for a in conv.agents if a != me), me)
            keys = await self._keys_of_all([other, me], fresh=False)
            body = e2e.seal_direct(keys[other].public_key, keys[me].public_key, plaintext)
            return body, pb.EncryptionMetadata(scheme=e2e.DIRECT_SCHEME, key_type="recipient")
        await self._sync(st)
        if st.stale:
            if st.conversation.owner != me:
                raise FailedPrecondition(
                    f"a member left {conv.id} after its group key of epoch "
                    f"{st.conversation.key_epoch} was made, and the owner has not rotated it yet",
                    reason=Reason.STALE_EPOCH,
                    hint=f"wait for {st.conversation.owner}'s client to rotate the key",
                )
            await self._seal_new_epoch(st, only_if_stale=True)
        if st.conversation.key_epoch == 0:
            raise FailedPrecondition(
                f"{conv.id} has no group key", hint="create it with encrypted=True"
            )
        epoch = st.conversation.key_epoch
        key = await self._group_key(st, epoch)
        body = e2e.seal_group(key, conv.id, epoch, me, plaintext)
        return body, pb.EncryptionMetadata(scheme=e2e.GROUP_SCHEME, key_type="group", epoch=epoch)

    async def decrypt(self, message: ConversationMessage) -> ConversationMessage:
        """``message`` with its plaintext; :class:`DecryptionError` when it does not open."""
        if not message.scheme:
            return dataclasses.replace(message, plaintext=message.ciphertext, error=None)
        e2e = self._crypto()
        st = await self._load_or_stub(message.conversation_id)
        what = f"message {message.id} of {message.conversation_id}"
        if message.scheme == e2e.DIRECT_SCHEME:
            plain = e2e.open_direct(self._ks().private, message.ciphertext, what)
        elif message.scheme == e2e.GROUP_SCHEME and message.key_type == "group":
            key = await self._group_key(st, message.epoch)
            plain = e2e.open_group(
                key,
                message.conversation_id,
                message.epoch,
                message.sender,
                message.ciphertext,
                what,
            )
        else:
            raise DecryptionError(f"{what} uses scheme {message.scheme!r}, unknown to this client")
        return dataclasses.replace(message, plaintext=plain, error=None)

    async def _load_or_stub(self, conversation_id: str) -> _State:
        st = self._states.get(conversation_id)
        if st is not None:
            return st
        try:
            return await self._load(conversation_id)
        except (PermissionDenied, NotFound):
            # A departed member still decrypts with the keys it kept (or learns it cannot).
            stub = Conversation(conversation_id, "group", "", (), {}, EPOCH0, 0)
            return self._state(stub)

    async def _open(self, st: _State, message: ConversationMessage) -> ConversationMessage:
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
        me = await self._ready() if self._keystore is not None else ""
        msg_subject = f"$conv.{conversation_id}.msg"
        async for m in self._client.subscribe(f"$conv.{conversation_id}.>", start=start):
            if m.subject == msg_subject:
                yield await self._open(st, ConversationMessage._of_event(m.id, m.event))
            elif not me or st.conversation.owner != me:
                continue
            elif m.type in _DEPARTURES:
                await self._sync(st)
                await self._seal_new_epoch(st, only_if_stale=True)
            elif m.type == "conversation.member_joined":
                await self._share_with_joiner(st, m.data)

    async def _share_with_joiner(self, st: _State, data: object) -> None:
        if not isinstance(data, dict):
            return
        who = data.get("agent")
        if not isinstance(who, str) or data.get("by") != who:
            return  # invited: invite() sealed the key already
        conv = (await self._load_fresh(st)).conversation
        if conv.key_epoch == 0 or who not in conv.agents:
            return  # a plaintext room, or it left again
        try:
            async with st.rotating:
                epoch = st.conversation.key_epoch
                await self._put_keys(st, epoch, await self._group_key(st, epoch), [who])
        except (FailedPrecondition, InvalidArgument):
            # It left, or the key moved on meanwhile: the next rotation seals to whoever
            # is a member then.
            return

    async def _load_fresh(self, st: _State) -> _State:
        return self._state(await self.get(st.conversation.id))

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
