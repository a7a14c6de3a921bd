"""Per-org quotas: durable subscriptions, live subscriptions, connections, and streams per
connection, each refused at its limit with ``RESOURCE_EXHAUSTED`` / ``QUOTA_EXCEEDED``.

Without them one org's plain key could create thousands of durables (each a consumer task
reading the log) or open thousands of streams on one connection, and slow every other org.
A quota counts what exists now, so releasing something (deleting a durable, closing a stream)
makes room at once. A setting of 0 turns its quota off.

Example::

    durables = OrgQuota("max_durables_per_org", 1000, "durable subscriptions")
    durables.acquire("acme")   # raises QuotaExceeded at the 1001st
    durables.release("acme")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from lockgate.broker.errors import QuotaExceeded

__all__ = ["QUOTA_DEFAULTS", "Connections", "OrgQuota"]

QUOTA_DEFAULTS: dict[str, int] = {
    "max_durables_per_org": 1000,
    "max_subscriptions_per_org": 10_000,
    "max_connections_per_org": 1000,
    "max_streams_per_connection": 100,
}
"""The quota settings and their defaults (sized for one machine; see README, Security)."""


class OrgQuota:
    """Counts things per org and refuses the one beyond ``limit`` (0: no limit)."""

    def __init__(self, quota: str, limit: int, what: str, *, hint: str = "") -> None:
        self.quota = quota
        self.limit = limit
        self.what = what
        self.hint = hint
        self._counts: Counter[str] = Counter()

    def count(self, org: str) -> int:
        return self._counts[org]

    def check(self, org: str) -> None:
        """Raises :class:`QuotaExceeded` when ``org`` is at the limit."""
        if self.limit and self._counts[org] >= self.limit:
            raise QuotaExceeded(self.quota, self.limit, f"org {org!r}", self.what, hint=self.hint)

    def acquire(self, org: str) -> None:
        self.check(org)
        self._counts[org] += 1

    def add(self, org: str) -> None:
        """Counts one without checking (what existed before a restart)."""
        self._counts[org] += 1

    def release(self, org: str) -> None:
        left = self._counts[org] - 1
        if left > 0:
            self._counts[org] = left
        else:
            del self._counts[org]


class Connections:
    """Open gRPC streams by connection and org.

    grpc does not name connections to a servicer, but a connection's peer address
    (``ipv4:127.0.0.1:53211``) is its own for as long as it is open, so streams are counted
    by peer. An org's connections are the peers holding at least one of its open streams:
    a connection that only makes unary calls is not counted (its calls end by themselves).
    Peers that are not TCP (a unix socket's peer is the same for every connection) count
    toward the org's connections as one and have no per-connection stream limit.
    """

    def __init__(self, max_connections_per_org: int, max_streams_per_connection: int) -> None:
        self.max_connections = max_connections_per_org
        self.max_streams = max_streams_per_connection
        self._streams: Counter[str] = Counter()
        """Open streams per peer."""
        self._orgs: dict[str, Counter[str]] = {}
        """Per org: its open streams per peer."""

    def streams(self, peer: str) -> int:
        return self._streams[peer]

    def connections(self, org: str) -> int:
        return len(self._orgs.get(org, ()))

    def by_org(self) -> list[tuple[str, int]]:
        """``(org, connections)`` of every org with an open stream (callable from the
        metric readers' threads: the copy is one C call)."""
        return [(org, len(peers)) for org, peers in list(self._orgs.items())]

    def open(self, org: str, peer: str) -> Callable[[], None]:
        """Counts a stream of ``org`` on ``peer``; returns its release (call it once).

        Raises :class:`QuotaExceeded` when the connection holds ``max_streams`` streams, or
        when ``peer`` is a new connection of an org that holds ``max_connections``."""
        tcp = peer.startswith(("ipv4:", "ipv6:"))
        if tcp and self.max_streams and self._streams[peer] >= self.max_streams:
            raise QuotaExceeded(
                "max_streams_per_connection",
                self.max_streams,
                "this connection",
                "open streams",
                hint="close streams you no longer read, or open another connection",
            )
        mine = self._orgs.setdefault(org, Counter())
        if self.max_connections and peer not in mine and len(mine) >= self.max_connections:
            if not mine:
                del self._orgs[org]
            raise QuotaExceeded(
                "max_connections_per_org",
                self.max_connections,
                f"org {org!r}",
                "connections with open streams",
                hint="share connections between streams, or ask the operator to raise "
                "max_connections_per_org",
            )
        self._streams[peer] += 1
        mine[peer] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            for counts, key in ((self._streams, peer), (mine, peer)):
                counts[key] -= 1
                if counts[key] <= 0:
                    del counts[key]
            if not mine and self._orgs.get(org) is mine:
                del self._orgs[org]

        return release
