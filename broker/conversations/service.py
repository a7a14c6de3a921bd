"""Conversations: who takes part, what each may do, and the events that say so.

A conversation is a set of subjects (``broker.conversations.subjects``) and this rule: only
its participants read or write them. :meth:`Conversations.may_read` is asked by
``PolicyGate.may_read`` for every ``$conv.`` subject on every read surface (live routing,
replays, durables and webhooks, history), and writes reach ``$conv.`` subjects only through
:meth:`Conversations.send` (the publish path refuses ``$`` subjects to clients). Membership
lives in memory (loaded from the store at start, changed here, written through) so the read
decision is a set lookup.

Example::

    convs = Conversations(host, store, config)
    await convs.load()
    rec = await convs.create(principal, "group", ["bob"], {"title": "ops"})
    await convs.send(principal, rec.conversation_id, b"...", "application/octet-stream", enc)
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.conversations import subjects as cs
from lockgate.broker.conversations.presence import (
    PresenceBoard,
    PresenceState,
    SharedPresence,
    TypingTimers,
)
from lockgate.broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.leases import Leases
from lockgate.broker.limits import BucketRequest, Limiter
from lockgate.broker.store import (
    AgentKeyRecord,
    ConversationRecord,
    ConversationStore,
    GroupKeyRecord,
    MemberRecord,
    ReceiptRecord,
)
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2

__all__ = ["KINDS", "Conversations", "Host", "Sent"]

log = logging.getLogger("lockgate.conversations")
CloudEvent = cloudevent_pb2.CloudEvent
KINDS = ("direct", "group", "broadcast")
_MAX_METADATA = 32
_MAX_AGENTS = 1000
# How far back a "last N" read first looks (see Conversations._last).
_LAST_N_FIRST_WINDOW_MS = 60_000
_MAX_PAGE = 1000


class Sent:
    __slots__ = ("duplicate", "id")

    def __init__(self, event_id: int, duplicate: bool) -> None:
        self.id = event_id
        self.duplicate = duplicate


class Host(Protocol):
    """What the conversations need of the node."""

    async def publish_owned(
        self, principal: Principal, subject: str, event: CloudEvent
    ) -> tuple[int, bool, BrokerError | None]:
        """Stores one event on a broker-owned subject: (id, duplicate, rejection)."""

    def notify_live(self, org: str, subject: str, event: CloudEvent) -> None:
        """Hands one event to the live subscribers of every node, without storing it."""

    def reads_changed(self) -> None:
        """Membership changed: cached read decisions are stale."""

    def conversation_changed(self, org: str, conversation_id: str) -> None:
        """Tells the other nodes to reload the conversation (cluster mode)."""

    def presence_seen(self, org: str, agent: str) -> None:
        """Tells the other nodes that the agent came online here (they watch its lease)."""

    async def read_stored(
        self, org: str, subject: str, after_id: int, start_ms: int, limit: int
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """Stored events of one subject, oldest first, and the cursor (0: the end)."""

    @property
    def limiter(self) -> Limiter: ...


def not_participant(org: str, agent: str, cid: str, what: str = "take part in") -> BrokerError:
    return PermissionDenied(
        f"{org}/{agent} does not {what} conversation {cid}",
        reason="NOT_PARTICIPANT",
        hint="ask its owner or an admin to invite you",
        metadata={"conversation_id": cid},
    )


def _unknown(cid: str) -> BrokerError:
    return NotFound(
        f"no conversation {cid!r} in this org",
        reason="UNKNOWN_CONVERSATION",
        hint="list yours with ListConversations",
        metadata={"conversation_id": cid},
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def _role(rec: ConversationRecord, agent: str) -> str:
    return next((m.role for m in rec.members if m.agent == agent), "")


def _check_agents(agents: Sequence[str]) -> list[str]:
    out: list[str] = []
    for a in agents:
        if not a or len(a) > 256 or any(ch.isspace() for ch in a):
            raise InvalidArgument(f"{a!r} is not an agent name", hint="name agents of your org")
        if a not in out:
            out.append(a)
    if len(out) > _MAX_AGENTS:
        raise InvalidArgument(f"at most {_MAX_AGENTS} agents at once")
    return out


class Conversations:
    """The conversations of every org on this node (see the module)."""

    def __init__(self, host: Host, store: ConversationStore, config: Config) -> None:
        self.host = host
        self.store = store
        self.config = config
        self._convs: dict[tuple[str, str], ConversationRecord] = {}
        self._members: dict[tuple[str, str], frozenset[str]] = {}
        self._mine: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
        self.limits: Callable[[], int] = lambda: config.max_group_members
        """The group limit now (the node reads it from the config store, live)."""
        self.shared = SharedPresence(
            config.presence_grace, self._announce, lambda who: host.presence_seen(*who)
        )
        self.presence: PresenceBoard = self.shared.board
        self.typing = TypingTimers(config.typing_ttl, self._typing_expired)

    # -- membership in memory ---------------------------------------------------------------

    async def load(self) -> None:
        for rec in await self.store.load_conversations():
            self._put(rec)

    def _put(self, rec: ConversationRecord) -> None:
        key = (rec.org, rec.conversation_id)
        for agent in self._members.get(key, frozenset()):
            self._mine[(rec.org, agent)].discard(rec.conversation_id)
        members = frozenset(m.agent for m in rec.members)
        self._convs[key] = rec
        self._members[key] = members
        for agent in members:
            self._mine[(rec.org, agent)].add(rec.conversation_id)
        self.host.reads_changed()

    def may_read(self, principal: Principal, subject: str) -> bool:
        """Whether ``principal`` takes part in the conversation of a ``$conv.`` subject."""
        cid = cs.conversation_of(subject)
        members = self._members.get((principal.org, cid or ""))
        return members is not None and principal.agent in members

    def subscribe_problem(self, principal: Principal, pattern: str) -> BrokerError | None:
        """A refusal for a pattern naming one conversation the caller is not in (a pattern
        over every conversation is filtered per subject instead)."""
        cid = cs.conversation_of(pattern)
        if cid is None:
            return None
        if not self.may_read(principal, pattern):
            return not_participant(principal.org, principal.agent, cid, "read")
        return None

    def _get(self, principal: Principal, cid: str, *, member: bool = True) -> ConversationRecord:
        rec = self._convs.get((principal.org, cid))
        if rec is None:
            raise _unknown(cid)
        if member and principal.agent not in self._members[(principal.org, cid)]:
            raise not_participant(principal.org, principal.agent, cid)
        return rec

    def _open(self, rec: ConversationRecord) -> None:
        if rec.closed_ms:
            raise FailedPrecondition(
                f"conversation {rec.conversation_id} is closed",
                reason="CONVERSATION_CLOSED",
                hint="create a new conversation",
            )

    def _mutable(self, rec: ConversationRecord) -> None:
        if rec.kind == "direct":
            raise FailedPrecondition(
                f"conversation {rec.conversation_id} is direct: its two participants are fixed",
                reason="IMMUTABLE_CONVERSATION",
                hint="create a group for more participants",
            )

    def _limit(self, count: int) -> None:
        limit = self.limits()
        if count > limit:
            raise ResourceExhausted(
                f"a conversation of {count} participants passes max_group_members of {limit}",
                reason="GROUP_FULL",
                hint="remove members first, or ask the operator to raise max_group_members",
                metadata={"limit": str(limit), "quota": "max_group_members"},
            )

    def conversation(self, principal: Principal, cid: str) -> ConversationRecord:
        return self._get(principal, cid)

    def mine(self, principal: Principal, include_closed: bool) -> list[ConversationRecord]:
        ids = self._mine.get((principal.org, principal.agent), set())
        recs = [self._convs[(principal.org, i)] for i in ids]
        recs = [r for r in recs if include_closed or not r.closed_ms]
        return sorted(recs, key=lambda r: (r.created_ms, r.conversation_id))

    # -- lifecycle --------------------------------------------------------------------------

    async def _save(self, rec: ConversationRecord) -> None:
        await self.store.save_conversation(rec)
        self._put(rec)
        self.host.conversation_changed(rec.org, rec.conversation_id)

    async def reload(self, org: str, conversation_id: str) -> None:
        """Takes another node's change from the store (its notice names the conversation)."""
        rec = await self.store.get_conversation(org, conversation_id)
        if rec is not None:
            self._put(rec)

    async def _lifecycle(
        self, principal: Principal, rec: ConversationRecord, kind: str, **data: object
    ) -> None:
        ev = CloudEvent(
            id=secrets.token_hex(16),
            source=f"lockgate:conversation/{rec.conversation_id}",
            spec_version="1.0",
            type=f"conversation.{kind}",
            text_data=json.dumps(
                {"conversation_id": rec.conversation_id, "by": principal.agent, **data}
            ),
        )
        ev.attributes["datacontenttype"].ce_string = "application/json"
        ev.attributes["convid"].ce_string = rec.conversation_id
        subject = cs.subject_of(rec.conversation_id, cs.EVENTS)
        _, _, err = await self.host.publish_owned(principal, subject, ev)
        if err is not None:
            log.error("conversation.event.not_stored: %s: %s", kind, err)

    async def create(
        self,
        principal: Principal,
        kind: str,
        participants: Sequence[str],
        metadata: Mapping[str, str],
        *,
        history_for_new_members: bool = False,
        open_: bool = False,
    ) -> ConversationRecord:
        if kind not in KINDS:
            raise InvalidArgument(
                "a conversation's type is direct, group or broadcast",
                hint="set type to CONVERSATION_TYPE_DIRECT, _GROUP or _BROADCAST",
            )
        others = [a for a in _check_agents(participants) if a != principal.agent]
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
        if kind != "direct":
            self._limit(len(others) + 1)
        now = _now_ms()
        members = (
            MemberRecord(principal.agent, "owner", now),
            *(MemberRecord(a, "member", now, principal.agent) for a in others),
        )
        cid = cs.new_id()
        rec = ConversationRecord(
            principal.org,
            cid,
            kind,
            principal.agent,
            now,
            members,
            dict(metadata),
            history_for_new_members=history_for_new_members,
            open=open_,
        )
        await self._save(rec)
        await self._lifecycle(
            principal, rec, "created", type=kind, participants=[m.agent for m in members]
        )
        return rec

    async def invite(
        self, principal: Principal, cid: str, agents: Sequence[str], role: str
    ) -> ConversationRecord:
        rec = self._get(principal, cid)
        self._open(rec)
        self._mutable(rec)
        mine = _role(rec, principal.agent)
        if mine not in ("owner", "admin") or (role == "admin" and mine != "owner"):
            raise not_participant(
                principal.org, principal.agent, cid, "own or administer (to invite into)"
            )
        new = [a for a in _check_agents(agents) if a not in self._members[(rec.org, cid)]]
        if not new:
            return rec
        self._limit(len(rec.members) + len(new))
        now = _now_ms()
        rec = replace(
            rec,
            members=(*rec.members, *(MemberRecord(a, role, now, principal.agent) for a in new)),
        )
        await self._save(rec)
        for a in new:
            await self._lifecycle(principal, rec, "member_joined", agent=a, role=role)
        return rec

    async def join(self, principal: Principal, cid: str) -> ConversationRecord:
        rec = self._convs.get((principal.org, cid))
        if rec is None:
            raise _unknown(cid)
        if principal.agent in self._members[(principal.org, cid)]:
            return rec
        if not rec.open:
            raise not_participant(
                principal.org, principal.agent, cid, "take part in (and it is not open)"
            )
        self._open(rec)
        self._limit(len(rec.members) + 1)
        rec = replace(
            rec, members=(*rec.members, MemberRecord(principal.agent, "member", _now_ms()))
        )
        await self._save(rec)
        await self._lifecycle(principal, rec, "member_joined", agent=principal.agent, role="member")
        return rec

    async def leave(self, principal: Principal, cid: str) -> None:
        rec = self._get(principal, cid)
        self._mutable(rec)
        if rec.owner == principal.agent:
            raise FailedPrecondition(
                f"the owner cannot leave conversation {cid}",
                reason="FAILED_PRECONDITION",
                hint="close it instead",
            )
        # Announced first, so that the departing agent hears it too.
        await self._lifecycle(principal, rec, "member_left", agent=principal.agent)
        await self._drop(rec, principal.agent)

    async def remove(self, principal: Principal, cid: str, agent: str) -> ConversationRecord:
        rec = self._get(principal, cid)
        self._mutable(rec)
        mine, theirs = _role(rec, principal.agent), _role(rec, agent)
        if (
            mine not in ("owner", "admin")
            or theirs == "owner"
            or (theirs == "admin" and mine != "owner")
        ):
            raise not_participant(
                principal.org, principal.agent, cid, f"have the right to remove {agent!r} from"
            )
        if not theirs:
            raise NotFound(
                f"{agent!r} does not take part in conversation {cid}", reason="NOT_FOUND"
            )
        await self._lifecycle(principal, rec, "member_removed", agent=agent)
        return await self._drop(rec, agent)

    async def _drop(self, rec: ConversationRecord, agent: str) -> ConversationRecord:
        rec = replace(rec, members=tuple(m for m in rec.members if m.agent != agent))
        await self._save(rec)
        self.typing.off(rec.org, rec.conversation_id, agent)
        return rec

    async def close(self, principal: Principal, cid: str) -> None:
        rec = self._get(principal, cid)
        if rec.owner != principal.agent:
            raise not_participant(principal.org, principal.agent, cid, "own (to close)")
        if rec.closed_ms:
            return
        rec = replace(rec, closed_ms=_now_ms())
        await self._save(rec)
        await self._lifecycle(principal, rec, "closed")

    # -- messages ---------------------------------------------------------------------------

    async def send(
        self,
        principal: Principal,
        cid: str,
        data: bytes,
        content_type: str,
        encryption: Mapping[str, str],
        message_key: str = "",
    ) -> Sent:
        rec = self._get(principal, cid)
        self._open(rec)
        if rec.kind == "broadcast" and rec.owner != principal.agent:
            raise not_participant(
                principal.org, principal.agent, cid, "own (only the owner writes to) broadcast"
            )
        ev = CloudEvent(
            id=message_key or secrets.token_hex(16),
            source=f"lockgate:agent/{principal.agent}",
            spec_version="1.0",
            type="conversation.message",
            binary_data=data,
        )
        attrs = ev.attributes
        attrs["datacontenttype"].ce_string = content_type or "application/octet-stream"
        attrs["convid"].ce_string = cid
        attrs["convsender"].ce_string = principal.agent
        for name, value in encryption.items():
            if value:
                attrs[name].ce_string = value
        event_id, dup, err = await self.host.publish_owned(
            principal, cs.subject_of(cid, cs.MSG), ev
        )
        if err is not None:
            raise err
        return Sent(event_id, dup)

    def _floor(self, principal: Principal, rec: ConversationRecord) -> int:
        """The id after which the member reads: its join, unless history is open to it."""
        if rec.history_for_new_members:
            return 0
        joined = next(m.joined_ms for m in rec.members if m.agent == principal.agent)
        return max(0, id_for_time_ms(joined) - 1)

    async def history(
        self,
        principal: Principal,
        cid: str,
        *,
        after_id: int = 0,
        start_ms: int = 0,
        limit: int = 100,
        last_n: int = 0,
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        rec = self._get(principal, cid)
        subject = cs.subject_of(cid, cs.MSG)
        after = max(after_id, self._floor(principal, rec))
        if not last_n:
            return await self.host.read_stored(
                rec.org, subject, after, start_ms, min(limit, _MAX_PAGE)
            )
        return await self._last(rec.org, subject, after, start_ms, min(last_n, _MAX_PAGE)), 0

    async def _last(
        self, org: str, subject: str, floor: int, start_ms: int, n: int
    ) -> list[broker_pb2.StoredEvent]:
        """The newest ``n`` messages above ``floor``. The log reads oldest first, so the read
        starts a minute back and widens eightfold until it holds ``n`` or reaches the floor:
        its cost follows the recent traffic, not the length of the conversation."""
        window = _LAST_N_FIRST_WINDOW_MS
        while True:
            since = id_for_time_ms(_now_ms() - window) - 1
            after = max(floor, since)
            keep: collections.deque[broker_pb2.StoredEvent] = collections.deque(maxlen=n)
            while True:
                page, cursor = await self.host.read_stored(org, subject, after, start_ms, _MAX_PAGE)
                keep.extend(page)
                if not cursor:
                    break
                after = cursor
            if len(keep) >= n or since <= floor:
                return list(keep)
            window *= 8

    # -- keys -------------------------------------------------------------------------------

    async def publish_key(
        self, principal: Principal, public_key: bytes, identity_key: bytes, signature: bytes
    ) -> AgentKeyRecord:
        if len(public_key) != 32 or len(identity_key) != 32 or len(signature) != 64:
            raise InvalidArgument(
                "a key directory entry is a 32-byte X25519 public key, a 32-byte Ed25519 "
                "identity key and a 64-byte signature",
                hint="sign public_key with the identity key (Ed25519)",
            )
        rec = AgentKeyRecord(
            principal.org, principal.agent, public_key, identity_key, signature, _now_ms()
        )
        await self.store.put_agent_key(rec)
        return rec

    async def keys(self, principal: Principal, agents: Sequence[str]) -> list[AgentKeyRecord]:
        return await self.store.get_agent_keys(principal.org, _check_agents(agents))

    async def put_group_keys(
        self,
        principal: Principal,
        cid: str,
        epoch: int,
        envelopes: Sequence[tuple[str, bytes, bytes]],
    ) -> int:
        rec = self._get(principal, cid)
        self._open(rec)
        if epoch not in (rec.key_epoch, rec.key_epoch + 1) or epoch == 0:
            raise FailedPrecondition(
                f"group key epoch {epoch} is neither the current one ({rec.key_epoch}) "
                "nor the next",
                reason="STALE_EPOCH",
                hint="read the conversation's key_epoch and seal for it (or the next to rotate)",
                metadata={"key_epoch": str(rec.key_epoch)},
            )
        members = self._members[(rec.org, cid)]
        strangers = [a for a, _, _ in envelopes if a not in members]
        if strangers or not envelopes:
            raise InvalidArgument(
                f"group keys are sealed to participants only (not {', '.join(strangers)})"
                if strangers
                else "no envelopes",
                hint="seal the key to each current participant",
            )
        now = _now_ms()
        await self.store.put_group_keys(
            [
                GroupKeyRecord(rec.org, cid, epoch, a, k, principal.agent, s, now)
                for a, k, s in envelopes
            ]
        )
        if epoch == rec.key_epoch + 1:
            rec = replace(rec, key_epoch=epoch)
            await self._save(rec)
            await self._lifecycle(principal, rec, "key_rotated", epoch=epoch)
        return rec.key_epoch

    async def group_keys(
        self, principal: Principal, cid: str, min_epoch: int
    ) -> tuple[list[GroupKeyRecord], int]:
        rec = self._get(principal, cid)
        got = await self.store.get_group_keys(rec.org, cid, principal.agent, min_epoch)
        return got, rec.key_epoch

    # -- receipts, typing, presence ---------------------------------------------------------

    async def mark(
        self, principal: Principal, cid: str, delivered_id: int, read_id: int
    ) -> ReceiptRecord:
        self._get(principal, cid)
        r = await self.store.mark_receipt(
            principal.org, cid, principal.agent, delivered_id, read_id, _now_ms()
        )
        self._notice(
            principal.org,
            cid,
            cs.RECEIPTS,
            "conversation.receipt",
            {
                "agent": principal.agent,
                "delivered_id": str(r.delivered_id),
                "read_id": str(r.read_id),
            },
        )
        return r

    async def receipts(self, principal: Principal, cid: str) -> list[ReceiptRecord]:
        self._get(principal, cid)
        return await self.store.list_receipts(principal.org, cid)

    async def set_typing(self, principal: Principal, cid: str, typing: bool) -> None:
        rec = self._get(principal, cid)
        self._open(rec)
        rate = self.config.typing_per_second
        key = f"typing|{principal.org}|{principal.agent}"
        (grant,) = await self.host.limiter.take([BucketRequest(key, rate, max(5.0, rate), 1)])
        if grant.granted < 1:
            raise ResourceExhausted(
                f"{principal.org}/{principal.agent} sent typing indicators faster than "
                f"{rate:g} a second; retry in {grant.retry_after:.3g} s",
                reason="RATE_LIMITED",
                hint="send a typing indicator when typing starts and stops, not per key",
                metadata={"retry_after": f"{grant.retry_after:.3f}", "rule": "typing"},
            )
        if typing:
            self.typing.on(principal.org, cid, principal.agent)
        else:
            self.typing.off(principal.org, cid, principal.agent)
        self._typing_notice(principal.org, cid, principal.agent, typing)

    def _typing_expired(self, org: str, cid: str, agent: str) -> None:
        self._typing_notice(org, cid, agent, False)

    def _typing_notice(self, org: str, cid: str, agent: str, typing: bool) -> None:
        self._notice(
            org,
            cid,
            cs.TYPING,
            "conversation.typing",
            {
                "agent": agent,
                "typing": "true" if typing else "false",
                "ttl_ms": str(int(self.config.typing_ttl * 1000)),
            },
        )

    def _notice(self, org: str, cid: str, kind: str, type_: str, attrs: Mapping[str, str]) -> None:
        ev = CloudEvent(
            id=secrets.token_hex(16),
            source=f"lockgate:conversation/{cid}",
            spec_version="1.0",
            type=type_,
            text_data=json.dumps({"conversation_id": cid, **attrs}),
        )
        ev.attributes["datacontenttype"].ce_string = "application/json"
        ev.attributes["convid"].ce_string = cid
        self.host.notify_live(org, cs.subject_of(cid, kind), ev)

    def connected(self, principal: Principal) -> None:
        self.presence.connected((principal.org, principal.agent))

    def disconnected(self, principal: Principal) -> None:
        self.presence.disconnected((principal.org, principal.agent))

    def _announce(self, who: tuple[str, str], online: bool) -> None:
        """Sends a presence notice to each conversation of the agent."""
        org, agent = who
        for cid in sorted(self._mine.get(who, ())):
            self._notice(
                org,
                cid,
                cs.PRESENCE,
                "conversation.presence",
                {"agent": agent, "status": "online" if online else "offline"},
            )

    async def presence_of(self, principal: Principal, cid: str) -> list[tuple[str, PresenceState]]:
        """Each participant's presence, as every node answers it (``SharedPresence``)."""
        rec = self._get(principal, cid)
        return [(m.agent, await self.shared.state((rec.org, m.agent))) for m in rec.members]

    async def keep_presence(self, leases: Leases, node_id: str) -> None:
        """See :meth:`SharedPresence.run` (runs until cancelled)."""
        await self.shared.run(leases, node_id)

    def remote_online(self, org: str, agent: str) -> None:
        """Another node announced the agent online (its ``presence_online`` notice)."""
        self.shared.remote_online((org, agent))

    def close_timers(self) -> None:
        self.shared.close()
        self.typing.close()
