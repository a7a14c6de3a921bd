"""The live roster of a cluster's nodes: who is there now, as each node says of itself.

Every node sends a heartbeat (a ``node_alive`` notice on the backbone carrying its
:class:`NodeCard`) every ``heartbeat`` seconds (the setting, 5 s by default), and keeps the
cards it hears in a :class:`Roster` (its own card too). A node that is not heard from for
:data:`EXPIRY_BEATS` heartbeats (15 s by default) drops out of the roster; any other notice
a node sends counts as hearing from it. The roster holds at most :data:`ROSTER_SIZE` nodes
(the ones heard from last), so memory is bounded whatever the cluster's size.

The notices are the backbone's (core NATS in cluster mode, in-process in embedded mode): they
reach every node of the cluster without Redis, which a cluster may run without.

Example::

    roster = Roster()
    roster.heard(card.node_id, card)
    for entry in roster.alive():
        print(entry.node_id, entry.card.version if entry.card else "?")
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = [
    "EXPIRY_BEATS",
    "LOCKGATE_VERSION",
    "ROSTER_SIZE",
    "NodeCard",
    "Roster",
    "RosterEntry",
]

EXPIRY_BEATS = 3
"""Heartbeats a node may miss before it drops out of the roster (a lost notice or a slow
event loop costs one, not the node's place)."""
ROSTER_SIZE = 256
"""Nodes a roster holds at most (the ones heard from last)."""


def _version() -> str:
    try:
        return importlib.metadata.version("lockgate")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


LOCKGATE_VERSION = _version()
"""The running lockgate's version, as a node's card says it."""


@dataclass(frozen=True, slots=True)
class NodeCard:
    """What a node says of itself in its heartbeat."""

    node_id: str
    worker_id: int
    version: str
    listen: str
    """The gRPC listener's HOST:PORT as configured."""
    started_ms: int
    backbone: str
    """``local`` (embedded) or the NATS URL's scheme and host."""
    events_per_second: float
    """Events stored per second over the last heartbeat's interval."""
    subscriptions: int
    durables: int
    """Durables active (loaded) on this node."""

    def encode(self) -> str:
        """The card as one line of compact JSON (it travels in a notice's ``name``)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> NodeCard | None:
        """The card in ``text``; None when ``text`` is no card (a newer or broken sender)."""
        try:
            doc = json.loads(text)
            card = cls(
                node_id=str(doc["node_id"]),
                worker_id=int(doc["worker_id"]),
                version=str(doc["version"]),
                listen=str(doc["listen"]),
                started_ms=int(doc["started_ms"]),
                backbone=str(doc["backbone"]),
                events_per_second=float(doc["events_per_second"]),
                subscriptions=int(doc["subscriptions"]),
                durables=int(doc["durables"]),
            )
        except (ValueError, TypeError, KeyError):
            return None
        # GetStatus copies the card into NodeStatus: a number its field cannot hold would
        # fail every status read while that node is in the roster.
        counts = (card.worker_id, card.subscriptions, card.durables)
        if not all(0 <= n < 1 << 32 for n in counts) or not 0 <= card.started_ms < 1 << 63:
            return None
        return card


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One live node: its last card (None until its first heartbeat is heard) and when it
    was last heard from, in Unix milliseconds."""

    node_id: str
    card: NodeCard | None
    last_heard_ms: int


class Roster:
    """The nodes heard from within ``expiry`` seconds, at most ``size`` of them (the
    roster of the node that keeps it: its ``heartbeat`` times :data:`EXPIRY_BEATS`)."""

    def __init__(
        self,
        *,
        size: int = ROSTER_SIZE,
        expiry: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nodes: collections.OrderedDict[str, RosterEntry] = collections.OrderedDict()
        self._size = size
        self.expiry = expiry
        self._clock = clock

    def heard(self, node_id: str, card: NodeCard | None = None) -> None:
        """Records that ``node_id`` was heard from now (with its card when it sent one)."""
        old = self._nodes.pop(node_id, None)
        if card is None and old is not None:
            card = old.card
        self._nodes[node_id] = RosterEntry(node_id, card, int(self._clock() * 1000))
        while len(self._nodes) > self._size:
            self._nodes.popitem(last=False)

    def alive(self) -> list[RosterEntry]:
        """The nodes heard from within the expiry, by node id; forgets the others."""
        horizon = int((self._clock() - self.expiry) * 1000)
        while self._nodes:
            first = next(iter(self._nodes.values()))
            if first.last_heard_ms >= horizon:
                break
            self._nodes.popitem(last=False)
        return sorted(self._nodes.values(), key=lambda e: e.node_id)
