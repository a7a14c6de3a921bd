"""Who takes part in which conversation, held in memory so a read decision is a set lookup.

The store is the truth; :class:`Membership` is its index on this node, filled at start and
kept by every change (``put``), ours or another node's.

>>> from lockgate.broker.store import MemberRecord
>>> m = Membership(lambda: None)
>>> m.put(ConversationRecord("o", "c1", "group", "ann", 0, (MemberRecord("ann", "owner", 0),), {}))
>>> [m.may_read(Principal("o", a, frozenset()), "$conv.c1.msg") for a in ("ann", "bob")]
[True, False]
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from lockgate.broker.auth import Principal
from lockgate.broker.conversations import rules
from lockgate.broker.conversations import subjects as cs
from lockgate.broker.store import ConversationRecord

__all__ = ["Membership"]


class Membership:
    """Conversations and their participants by org (see the module)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed
        self._convs: dict[tuple[str, str], ConversationRecord] = {}
        self._members: dict[tuple[str, str], frozenset[str]] = {}
        self._mine: dict[tuple[str, str], set[str]] = collections.defaultdict(set)

    def put(self, rec: ConversationRecord) -> None:
        """Takes the conversation as it is now; cached read decisions become stale."""
        key = (rec.org, rec.conversation_id)
        for agent in self._members.get(key, frozenset()):
            self._mine[(rec.org, agent)].discard(rec.conversation_id)
        members = frozenset(m.agent for m in rec.members)
        self._convs[key] = rec
        self._members[key] = members
        for agent in members:
            self._mine[(rec.org, agent)].add(rec.conversation_id)
        self._changed()

    def may_read(self, principal: Principal, subject: str) -> bool:
        """Whether ``principal`` takes part in the conversation of a ``$conv.`` subject."""
        cid = cs.conversation_of(subject)
        members = self._members.get((principal.org, cid or ""))
        return members is not None and principal.agent in members

    def find(self, org: str, cid: str) -> ConversationRecord:
        """The conversation, or ``UNKNOWN_CONVERSATION``."""
        rec = self._convs.get((org, cid))
        if rec is None:
            raise rules.unknown(cid)
        return rec

    def get(self, principal: Principal, cid: str) -> ConversationRecord:
        """The conversation, refused to an agent that takes no part in it."""
        rec = self.find(principal.org, cid)
        if principal.agent not in self._members[(principal.org, cid)]:
            raise rules.not_participant(principal.org, principal.agent, cid)
        return rec

    def members(self, org: str, cid: str) -> frozenset[str]:
        return self._members.get((org, cid), frozenset())

    def ids_of(self, org: str, agent: str) -> list[str]:
        """The ids of the agent's conversations, sorted."""
        return sorted(self._mine.get((org, agent), ()))

    def mine(self, principal: Principal, include_closed: bool) -> list[ConversationRecord]:
        ids = self._mine.get((principal.org, principal.agent), set())
        recs = [self._convs[(principal.org, i)] for i in ids]
        recs = [r for r in recs if include_closed or not r.closed_ms]
        return sorted(recs, key=lambda r: (r.created_ms, r.conversation_id))
