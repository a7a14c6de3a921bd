"""The types of ``client.conversations`` (:mod:`clients._conversations`): frozen dataclasses
made from the ConversationService's messages, as the rest of the client's types are."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from lockgate.broker.v1 import cloudevent_pb2, conversation_pb2
from lockgate.clients._codec import decode_data
from lockgate.clients._errors import DecryptionError, LockgateError

__all__ = [
    "AgentKey",
    "Conversation",
    "ConversationKind",
    "ConversationMessage",
    "Participant",
    "Presence",
    "Receipt",
    "SendResult",
]

pb = conversation_pb2

_T = TypeVar("_T")
ConversationKind = Literal["direct", "group", "broadcast"]
KIND = {
    "direct": pb.CONVERSATION_TYPE_DIRECT,
    "group": pb.CONVERSATION_TYPE_GROUP,
    "broadcast": pb.CONVERSATION_TYPE_BROADCAST,
}
_KIND_OF = {v: k for k, v in KIND.items()}
ROLE = {"member": pb.PARTICIPANT_ROLE_MEMBER, "admin": pb.PARTICIPANT_ROLE_ADMIN}
_ROLE_OF = {
    pb.PARTICIPANT_ROLE_UNSPECIFIED: "member",
    pb.PARTICIPANT_ROLE_MEMBER: "member",
    pb.PARTICIPANT_ROLE_ADMIN: "admin",
    pb.PARTICIPANT_ROLE_OWNER: "owner",
}
EPOCH0 = dt.datetime.fromtimestamp(0, dt.UTC)


def time_of(ts: Any) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC) if ts.seconds or ts.nanos else EPOCH0


@dataclass(frozen=True, slots=True)
class Participant:
    """One agent of a conversation: ``role`` is owner, admin or member."""

    agent: str
    role: str
    joined_time: dt.datetime
    invited_by: str = ""


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation as the broker describes it."""

    id: str
    type: ConversationKind
    owner: str
    participants: tuple[Participant, ...]
    metadata: dict[str, str]
    created_time: dt.datetime
    key_epoch: int
    """The current group key epoch (0: none, a direct or plaintext conversation)."""
    history_for_new_members: bool = False
    open: bool = False
    closed: bool = False
    subject_prefix: str = ""

    @property
    def agents(self) -> list[str]:
        """The participants' names, the owner first."""
        return [p.agent for p in self.participants]

    @classmethod
    def _of(cls, m: conversation_pb2.Conversation) -> Conversation:
        return cls(
            m.conversation_id,
            _KIND_OF.get(m.type, "group"),  # type: ignore[arg-type]
            m.owner,
            tuple(
                Participant(
                    p.agent, _ROLE_OF.get(p.role, "member"), time_of(p.joined_time), p.invited_by
                )
                for p in m.participants
            ),
            dict(m.metadata),
            time_of(m.created_time),
            m.key_epoch,
            m.history_for_new_members,
            m.open,
            m.HasField("closed_time"),
            m.subject_prefix,
        )


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    """One message, decrypted when it could be (``error`` says why not).

    ``plaintext`` is the decrypted bytes (``None`` when ``error`` is set, or when the message
    was read with ``decrypt=False``); ``ciphertext`` the bytes as the broker stores them.
    ``data`` decodes the plaintext by its content type (JSON, text or bytes), ``data_as`` into
    a pydantic model or dataclass.
    """

    id: int
    conversation_id: str
    sender: str
    sent_time: dt.datetime
    content_type: str
    scheme: str
    """``xchacha20-poly1305`` (group), ``x25519-sealedbox`` (direct) or ``""`` (plaintext)."""
    key_type: str
    epoch: int
    message_key: str
    ciphertext: bytes
    plaintext: bytes | None = None
    error: LockgateError | None = None

    @property
    def encrypted(self) -> bool:
        return bool(self.scheme)

    def _event(self) -> cloudevent_pb2.CloudEvent:
        if self.error is not None:
            raise self.error
        if self.plaintext is None:
            raise DecryptionError(f"message {self.id} was read without decrypting it")
        if self.content_type.split(";", 1)[0].strip().lower().startswith("text/"):
            ev = cloudevent_pb2.CloudEvent(text_data=self.plaintext.decode(errors="replace"))
        else:
            ev = cloudevent_pb2.CloudEvent(binary_data=self.plaintext)
        ev.attributes["datacontenttype"].ce_string = self.content_type
        return ev

    @property
    def data(self) -> object:
        """The plaintext decoded by its content type (raises ``error`` if it did not decrypt)."""
        return decode_data(self._event())

    def data_as(self, model: type[_T]) -> _T:
        """The plaintext validated into ``model`` (a pydantic model or a dataclass)."""
        return decode_data(self._event(), model)

    @classmethod
    def _of(cls, m: conversation_pb2.ConversationMessage) -> ConversationMessage:
        enc = m.encryption_metadata
        return cls(
            m.id,
            m.conversation_id,
            m.sender,
            time_of(m.sent_time),
            m.content_type,
            enc.scheme,
            enc.key_type,
            enc.epoch,
            m.message_key,
            m.data,
            None if enc.scheme else m.data,
        )

    @classmethod
    def _of_event(cls, id: int, ev: cloudevent_pb2.CloudEvent) -> ConversationMessage:
        def attr(name: str) -> str:
            return ev.attributes[name].ce_string if name in ev.attributes else ""

        epoch = attr("encepoch")
        scheme = attr("encscheme")
        data = ev.binary_data or ev.text_data.encode()
        return cls(
            id,
            attr("convid"),
            attr("convsender"),
            dt.datetime.now(dt.UTC),
            attr("datacontenttype"),
            scheme,
            attr("enckeytype"),
            int(epoch) if epoch.isdigit() else 0,
            ev.id,
            data,
            None if scheme else data,
        )


@dataclass(frozen=True, slots=True)
class SendResult:
    """The broker's Snowflake id of a sent message; ``duplicate`` when its key repeated."""

    id: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Receipt:
    """Up to where one participant received and read a conversation's messages."""

    agent: str
    delivered_id: int
    read_id: int
    updated_time: dt.datetime


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a participant is online (a live stream or WebSocket, with a grace period)."""

    agent: str
    online: bool
    since_time: dt.datetime


@dataclass(frozen=True, slots=True)
class AgentKey:
    """A verified key directory entry (its identity key pinned on first use)."""

    agent: str
    public_key: bytes
    identity_key: bytes
    published_time: dt.datetime


def receipt_of(r: conversation_pb2.Receipt) -> Receipt:
    return Receipt(r.agent, r.delivered_id, r.read_id, time_of(r.updated_time))
