"""Conversations: who takes part, what each may do, and the events that say so.

A conversation is a set of subjects (``broker.conversations.subjects``) and this rule: only
its participants read or write them. :meth:`Conversations.may_read` is asked by
``PolicyGate.may_read`` for every ``$conv.`` subject on every read surface (live routing,
replays, durables and webhooks, history), and writes reach ``$conv.`` subjects only through
:meth:`Conversations.send` (the publish path refuses ``$`` subjects to clients). Membership
lives in memory (``membership``: loaded from the store at start, changed here, written
through) so the read decision is a set lookup. The checks are in ``rules``, the events'
shape in ``events``, reading back in ``history``, and the notices to live subscribers only
in ``live``; this module is the façade that puts them in order.

Example::

    convs = Conversations(host, store, config)
    await convs.load()
    rec = await convs.create(principal, "group", ["bob"], {"title": "ops"})
    await convs.send(principal, rec.conversation_id, b"...", "application/octet-stream", enc)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.conversations import rules
from lockgate.broker.conversations import subjects as cs
from lockgate.broker.conversations.events import conversation_event, message_event
from lockgate.broker.conversations.history import floor_of, newest
from lockgate.broker.conversations.live import LiveHost, Liveness
from lockgate.broker.conversations.membership import Membership
from lockgate.broker.conversations.presence import PresenceState
from lockgate.broker.conversations.rules import KINDS, MAX_PAGE, now_ms, role_of
from lockgate.broker.errors import BrokerError, FailedPrecondition, NotFound
from lockgate.broker.leases import Leases
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


class Sent:
    __slots__ = ("duplicate", "id")

    def __init__(self, event_id: int, duplicate: bool) -> None:
        self.id = event_id
        self.duplicate = duplicate


class Host(LiveHost, Protocol):
    """What the conversations need of the node (and, as a :class:`LiveHost`, their notices)."""

    async def publish_owned(
        self, principal: Principal, subject: str, event: CloudEvent
    ) -> tuple[int, bool, BrokerError | None]:
        """Stores one event on a broker-owned subject: (id, duplicate, rejection)."""

    def reads_changed(self) -> None:
        """Membership changed: cached read decisions are stale."""

    def conversation_changed(self, org: str, conversation_id: str) -> None:
        """Tells the other nodes to reload the conversation (cluster mode)."""

    async def read_stored(
        self, org: str, subject: str, after_id: int, start_ms: int, limit: int
    ) -> tuple[list[broker_pb2.StoredEvent], int]:
        """Stored events of one subject, oldest first, and the cursor (0: the end)."""


class Conversations:
    """The conversations of every org on this node (see the module)."""

    def __init__(self, host: Host, store: ConversationStore, config: Config) -> None:
        self.host = host
        self.store = store
        self.config = config
        self.members = Membership(host.reads_changed)
        self.limits: Callable[[], int] = lambda: config.max_group_members
        """The group limit now (the node reads it from the config store, live)."""
        self.live = Liveness(host, config, lambda who: self.members.ids_of(*who))

    # -- membership in memory ---------------------------------------------------------------

    async def load(self) -> None:
        for rec in await self.store.load_conversations():
            self.members.put(rec)

    def may_read(self, principal: Principal, subject: str) -> bool:
        """Whether ``principal`` takes part in the conversation of a ``$conv.`` subject."""
        return self.members.may_read(principal, subject)

    def subscribe_problem(self, principal: Principal, pattern: str) -> BrokerError | None:
        """A refusal for a pattern naming one conversation the caller is not in (a pattern
        over every conversation is filtered per subject instead)."""
        cid = cs.conversation_of(pattern)
        if cid is None:
            return None
        if not self.may_read(principal, pattern):
            return rules.not_participant(principal.org, principal.agent, cid, "read")
        return None

    def _limit(self, count: int) -> None:
        rules.check_size(count, self.limits())

    def conversation(self, principal: Principal, cid: str) -> ConversationRecord:
        return self.members.get(principal, cid)

    def mine(self, principal: Principal, include_closed: bool) -> list[ConversationRecord]:
        return self.members.mine(principal, include_closed)

    # -- lifecycle --------------------------------------------------------------------------

    async def _save(self, rec: ConversationRecord) -> None:
        await self.store.save_conversation(rec)
        self.members.put(rec)
        self.host.conversation_changed(rec.org, rec.conversation_id)

    async def reload(self, org: str, conversation_id: str) -> None:
        """Takes another node's change from the store (its notice names the conversation)."""
        rec = await self.store.get_conversation(org, conversation_id)
        if rec is not None:
            self.members.put(rec)

    async def _lifecycle(
        self, principal: Principal, rec: ConversationRecord, kind: str, **data: object
    ) -> None:
        cid = rec.conversation_id
        ev = conversation_event(cid, f"conversation.{kind}", {"by": principal.agent, **data})
        _, _, err = await self.host.publish_owned(principal, cs.subject_of(cid, cs.EVENTS), ev)
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
        others = [a for a in rules.check_agents(participants) if a != principal.agent]
        rules.check_new(kind, others, open_, metadata)
        if kind != "direct":
            self._limit(len(others) + 1)
        now = now_ms()
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
        rec = self.members.get(principal, cid)
        rules.require_open(rec)
        rules.require_mutable(rec)
        mine = role_of(rec, principal.agent)
        if mine not in ("owner", "admin") or (role == "admin" and mine != "owner"):
            raise rules.not_participant(
                principal.org, principal.agent, cid, "own or administer (to invite into)"
            )
        present = self.members.members(rec.org, cid)
        new = [a for a in rules.check_agents(agents) if a not in present]
        if not new:
            return rec
        self._limit(len(rec.members) + len(new))
        now = now_ms()
        rec = replace(
            rec,
            members=(*rec.members, *(MemberRecord(a, role, now, principal.agent) for a in new)),
        )
        await self._save(rec)
        for a in new:
            await self._lifecycle(principal, rec, "member_joined", agent=a, role=role)
        return rec

    async def join(self, principal: Principal, cid: str) -> ConversationRecord:
        rec = self.members.find(principal.org, cid)
        if principal.agent in self.members.members(principal.org, cid):
            return rec
        if not rec.open:
            raise rules.not_participant(
                principal.org, principal.agent, cid, "take part in (and it is not open)"
            )
        rules.require_open(rec)
        self._limit(len(rec.members) + 1)
        rec = replace(
            rec, members=(*rec.members, MemberRecord(principal.agent, "member", now_ms()))
        )
        await self._save(rec)
        await self._lifecycle(principal, rec, "member_joined", agent=principal.agent, role="member")
        return rec

    async def leave(self, principal: Principal, cid: str) -> None:
        rec = self.members.get(principal, cid)
        rules.require_mutable(rec)
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
        rec = self.members.get(principal, cid)
        rules.require_mutable(rec)
        mine, theirs = role_of(rec, principal.agent), role_of(rec, agent)
        if (
            mine not in ("owner", "admin")
            or theirs == "owner"
            or (theirs == "admin" and mine != "owner")
        ):
            raise rules.not_participant(
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
        self.live.typing.off(rec.org, rec.conversation_id, agent)
        return rec

    async def close(self, principal: Principal, cid: str) -> None:
        rec = self.members.get(principal, cid)
        if rec.owner != principal.agent:
            raise rules.not_participant(principal.org, principal.agent, cid, "own (to close)")
        if rec.closed_ms:
            return
        rec = replace(rec, closed_ms=now_ms())
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
        rec = self.members.get(principal, cid)
        rules.require_open(rec)
        if rec.kind == "broadcast" and rec.owner != principal.agent:
            raise rules.not_participant(
                principal.org, principal.agent, cid, "own (only the owner writes to) broadcast"
            )
        ev = message_event(cid, principal.agent, data, content_type, encryption, message_key)
        event_id, dup, err = await self.host.publish_owned(
            principal, cs.subject_of(cid, cs.MSG), ev
        )
        if err is not None:
            raise err
        return Sent(event_id, dup)

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
        rec = self.members.get(principal, cid)
        subject = cs.subject_of(cid, cs.MSG)
        after = max(after_id, floor_of(rec, principal.agent))
        read = self.host.read_stored
        if not last_n:
            return await read(rec.org, subject, after, start_ms, min(limit, MAX_PAGE))
        return await newest(read, rec.org, subject, after, start_ms, min(last_n, MAX_PAGE)), 0

    # -- keys -------------------------------------------------------------------------------

    async def publish_key(
        self, principal: Principal, public_key: bytes, identity_key: bytes, signature: bytes
    ) -> AgentKeyRecord:
        rules.check_key_entry(public_key, identity_key, signature)
        rec = AgentKeyRecord(
            principal.org, principal.agent, public_key, identity_key, signature, now_ms()
        )
        await self.store.put_agent_key(rec)
        return rec

    async def keys(self, principal: Principal, agents: Sequence[str]) -> list[AgentKeyRecord]:
        return await self.store.get_agent_keys(principal.org, rules.check_agents(agents))

    async def put_group_keys(
        self,
        principal: Principal,
        cid: str,
        epoch: int,
        envelopes: Sequence[tuple[str, bytes, bytes]],
    ) -> int:
        rec = self.members.get(principal, cid)
        rules.require_open(rec)
        rules.check_epoch(rec, epoch)
        rules.check_envelopes(self.members.members(rec.org, cid), [a for a, _, _ in envelopes])
        now = now_ms()
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
        rec = self.members.get(principal, cid)
        got = await self.store.get_group_keys(rec.org, cid, principal.agent, min_epoch)
        return got, rec.key_epoch

    # -- receipts, typing, presence (``live``) ----------------------------------------------

    async def mark(
        self, principal: Principal, cid: str, delivered_id: int, read_id: int
    ) -> ReceiptRecord:
        self.members.get(principal, cid)
        r = await self.store.mark_receipt(
            principal.org, cid, principal.agent, delivered_id, read_id, now_ms()
        )
        self.live.receipt(principal.org, cid, r)
        return r

    async def receipts(self, principal: Principal, cid: str) -> list[ReceiptRecord]:
        self.members.get(principal, cid)
        return await self.store.list_receipts(principal.org, cid)

    async def set_typing(self, principal: Principal, cid: str, typing: bool) -> None:
        rules.require_open(self.members.get(principal, cid))
        await self.live.set_typing(principal.org, cid, principal.agent, typing)

    def connected(self, principal: Principal) -> None:
        self.live.presence.connected((principal.org, principal.agent))

    def disconnected(self, principal: Principal) -> None:
        self.live.presence.disconnected((principal.org, principal.agent))

    async def presence_of(self, principal: Principal, cid: str) -> list[tuple[str, PresenceState]]:
        """Each participant's presence, as every node answers it (``SharedPresence``)."""
        return await self.live.presence_of(self.members.get(principal, cid))

    async def keep_presence(self, leases: Leases, node_id: str) -> None:
        """See :meth:`SharedPresence.run` (runs until cancelled)."""
        await self.live.keep_presence(leases, node_id)

    def remote_online(self, org: str, agent: str) -> None:
        """Another node announced the agent online (its ``presence_online`` notice)."""
        self.live.shared.remote_online((org, agent))

    def close_timers(self) -> None:
        self.live.close()
