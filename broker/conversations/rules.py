"""The rules a conversation request must pass, and the refusals that say which one failed.

Pure: each function checks values it is given (a record, a count, a request's fields) and
returns or raises one :class:`~lockgate.broker.errors.BrokerError`; the service decides when to
ask.

>>> check_agents(["bob", "bob", "carol"])
['bob', 'carol']
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from lockgate.broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from lockgate.broker.store import ConversationRecord

__all__ = [
    "KINDS",
    "MAX_PAGE",
    "check_agents",
    "check_envelopes",
    "check_epoch",
    "check_key_entry",
    "check_new",
    "check_size",
    "not_participant",
    "now_ms",
    "require_mutable",
    "require_open",
    "role_of",
    "unknown",
]

KINDS = ("direct", "group", "broadcast")
MAX_PAGE = 1000
"""The most events one history read returns."""
_MAX_METADATA = 32
_MAX_AGENTS = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def not_participant(org: str, agent: str, cid: str, what: str = "take part in") -> BrokerError:
    return PermissionDenied(
        f"{org}/{agent} does not {what} conversation {cid}",
        reason="NOT_PARTICIPANT",
        hint="ask its owner or an admin to invite you",
        metadata={"conversation_id": cid},
    )


def unknown(cid: str) -> BrokerError:
    return NotFound(
        f"no conversation {cid!r} in this org",
        reason="UNKNOWN_CONVERSATION",
        hint="list yours with ListConversations",
        metadata={"conversation_id": cid},
    )


def role_of(rec: ConversationRecord, agent: str) -> str:
    """The agent's role in the conversation; empty when it takes no part."""
    return next((m.role for m in rec.members if m.agent == agent), "")


def check_agents(agents: Sequence[str]) -> list[str]:
    """The named agents without repeats, or a refusal for a name that is not one."""
    out: list[str] = []
    for a in agents:
        if not a or len(a) > 256 or any(ch.isspace() for ch in a):
            raise InvalidArgument(f"{a!r} is not an agent name", hint="name agents of your org")
        if a not in out:
            out.append(a)
    if len(out) > _MAX_AGENTS:
        raise InvalidArgument(f"at most {_MAX_AGENTS} agents at once")
    return out


def check_new(kind: str, others: Sequence[str], open_: bool, metadata: Mapping[str, str]) -> None:
    """A new conversation's kind, participants besides its creator, openness and metadata."""
    if kind not in KINDS:
        raise InvalidArgument(
            "a conversation's type is direct, group or broadcast",
            hint="set type to CONVERSATION_TYPE_DIRECT, _GROUP or _BROADCAST",
        )
    if kind == "direct" and len(others) != 1:
        raise InvalidArgument(
            f"a direct conversation has exactly two participants, not {len(others) + 1}",
            hint="name exactly one other agent, or create a group",
        )
    if kind == "direct" and open_:
        raise InvalidArgument("a direct conversation cannot be open")
    if len(metadata) > _MAX_METADATA or any(
        len(k) > 256 or len(v) > 1024 for k, v in metadata.items()
    ):
        raise InvalidArgument(
            f"metadata holds at most {_MAX_METADATA} entries of 1 KiB",
            hint="keep metadata small",
        )


def require_open(rec: ConversationRecord) -> None:
    if rec.closed_ms:
        raise FailedPrecondition(
            f"conversation {rec.conversation_id} is closed",
            reason="CONVERSATION_CLOSED",
            hint="create a new conversation",
        )


def require_mutable(rec: ConversationRecord) -> None:
    if rec.kind == "direct":
        raise FailedPrecondition(
            f"conversation {rec.conversation_id} is direct: its two participants are fixed",
            reason="IMMUTABLE_CONVERSATION",
            hint="create a group for more participants",
        )


def check_size(count: int, limit: int) -> None:
    """A conversation of ``count`` participants against the group limit."""
    if count > limit:
        raise ResourceExhausted(
            f"a conversation of {count} participants passes max_group_members of {limit}",
            reason="GROUP_FULL",
            hint="remove members first, or ask the operator to raise max_group_members",
            metadata={"limit": str(limit), "quota": "max_group_members"},
        )


def check_key_entry(public_key: bytes, identity_key: bytes, signature: bytes) -> None:
    if len(public_key) != 32 or len(identity_key) != 32 or len(signature) != 64:
        raise InvalidArgument(
            "a key directory entry is a 32-byte X25519 public key, a 32-byte Ed25519 "
            "identity key and a 64-byte signature",
            hint="sign public_key with the identity key (Ed25519)",
        )


def check_epoch(rec: ConversationRecord, epoch: int) -> None:
    """Group keys are sealed for the current epoch, or the next one to rotate."""
    if epoch not in (rec.key_epoch, rec.key_epoch + 1) or epoch == 0:
        raise FailedPrecondition(
            f"group key epoch {epoch} is neither the current one ({rec.key_epoch}) nor the next",
            reason="STALE_EPOCH",
            hint="read the conversation's key_epoch and seal for it (or the next to rotate)",
            metadata={"key_epoch": str(rec.key_epoch)},
        )


def check_envelopes(members: frozenset[str], recipients: Sequence[str]) -> None:
    """Group key envelopes go to current participants only, at least one."""
    strangers = [a for a in recipients if a not in members]
    if strangers or not recipients:
        raise InvalidArgument(
            f"group keys are sealed to participants only (not {', '.join(strangers)})"
            if strangers
            else "no envelopes",
            hint="seal the key to each current participant",
        )
