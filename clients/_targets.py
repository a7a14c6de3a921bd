"""Several brokers behind one client: the target list, the current connection, and failover.

A client holds one connection at a time, to the current target. A call or stream that fails
with UNAVAILABLE on it reports that connection as broken (:meth:`Targets.broken`), and the
next target becomes the current one, so the caller's retry (with its own backoff) goes
there. A report about a connection that is no longer the current one changes nothing: a
publish stream and a subscription that break together move the client once, not twice.
Connections are made when first used and kept (their channels reconnect by themselves), so
coming back to a target costs no new channel.

Example::

    targets = Targets(parse_targets("10.0.0.1:50051,10.0.0.2:50051"), make_connection)
    conn = await targets.ready(timeout=10)   # the first target that answers
    ...
    targets.broken(conn)                     # UNAVAILABLE on it: the next one is current
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from lockgate.clients._channel import Connection
from lockgate.clients._errors import Unavailable

__all__ = ["Targets", "parse_targets"]

log = logging.getLogger("lockgate.client")


def parse_targets(target: str | Sequence[str]) -> list[str]:
    """The targets of ``target``: one ``HOST:PORT`` (or ``grpcs://HOST:PORT``), several
    separated by commas (as ``LOCKGATE_SERVER`` and ``--server`` take them), or a list.

    >>> parse_targets("a:1, b:2")
    ['a:1', 'b:2']
    """
    items = target.split(",") if isinstance(target, str) else list(target)
    found = [t.strip() for t in items if t.strip()]
    if not found:
        raise ValueError(f"no broker address in {target!r}: give HOST:PORT[,HOST:PORT...]")
    return found


class Targets:
    """The targets of one client and which one is current (see the module)."""

    def __init__(self, targets: Sequence[str], connect: Callable[[str], Connection]) -> None:
        self.targets = list(targets)
        self._connect = connect
        self._conns: dict[int, Connection] = {}
        self.index = 0
        self.failovers = 0
        """How many times the current target changed after a failure."""

    @property
    def current(self) -> Connection:
        conn = self._conns.get(self.index)
        if conn is None:
            conn = self._conns[self.index] = self._connect(self.targets[self.index])
        return conn

    @property
    def target(self) -> str:
        return self.targets[self.index]

    async def ready(self, timeout: float | None) -> Connection:
        """The first target, in order, that answers; each gets up to 1 s a round (all of
        ``timeout`` when there is one). :class:`Unavailable` after ``timeout`` seconds; a
        TLS problem is raised at once (it is no reason to try elsewhere)."""
        if timeout is None:
            return self.current
        if len(self.targets) == 1:
            await self.current.wait_ready(timeout)
            return self.current
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i in range(len(self.targets)):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Unavailable(
                        f"cannot reach any broker of {', '.join(self.targets)}",
                        hint="start one with `lockgate serve`, or pass the right --server",
                    )
                self.index = i
                try:
                    await self.current.wait_ready(min(remaining, 1.0))
                except Unavailable:
                    continue
                return self.current

    def broken(self, conn: Connection) -> None:
        """``conn`` answered UNAVAILABLE: if it is still the current one and there is
        another target, the next target becomes current."""
        if len(self.targets) < 2 or self._conns.get(self.index) is not conn:
            return
        old = self.target
        self.index = (self.index + 1) % len(self.targets)
        self.failovers += 1
        log.info("client.failover: broker %s unavailable; failing over to %s", old, self.target)

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
