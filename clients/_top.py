"""``lockgate top``: a running broker's rates, subscribers, durables' lag and dead letters,
from ``AdminService.GetStatus`` every interval.

On a terminal the view is redrawn in place until Ctrl-C; otherwise (a pipe, a file) each
refresh is printed as plain lines under a ``--`` separator, with no escape codes, so a
script or a test reads it. ``--once`` prints one view (its rates over one interval);
``--count N`` stops after N views.

Example::

    lockgate top --server 127.0.0.1:50051 --api-key $ADMIN_KEY
    lockgate top --once
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

from lockgate.clients._admin import NodeStatus

__all__ = ["render", "run_top"]

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen
_MAX_DURABLES = 50
"""Rows of durables shown (the ones with the most lag and pending first)."""
_MAX_NODES = 8
"""Node ids named on the nodes line (the count covers them all)."""


def _rates(cur: NodeStatus, prev: NodeStatus | None) -> tuple[str, str, str]:
    span = cur.time - prev.time if prev is not None else 0.0
    if prev is None or span <= 0:
        return ("-", "-", "-")
    pairs = (
        (cur.published, prev.published),
        (cur.delivered, prev.delivered),
        (cur.rejected, prev.rejected),
    )
    a, b, c = (f"{max(0, now - then) / span:,.1f}" for now, then in pairs)
    return a, b, c


def render(cur: NodeStatus, prev: NodeStatus | None) -> list[str]:
    """The view of ``cur`` as lines; rates are against ``prev`` (None: shown as ``-``)."""
    when = dt.datetime.fromtimestamp(cur.time, dt.UTC).strftime("%H:%M:%S") if cur.time else ""
    lag = "-" if cur.history_lag is None else str(cur.history_lag)
    lines = [
        f"lockgate top  node {cur.node_id}  store {cur.store}  {when} UTC",
        "events/s    published {}  delivered {}  rejected {}".format(*_rates(cur, prev)),
        f"events      published {cur.published}  delivered {cur.delivered}  "
        f"rejected {cur.rejected}",
        f"subscribers ephemeral {cur.subscriptions}  durable streams "
        f"{sum(d.connected for d in cur.durables)}  history lag {lag}",
    ]
    if cur.nodes:  # the broker's admin sees the cluster's live nodes
        shown = ", ".join(n.node_id for n in cur.nodes[:_MAX_NODES])
        more = f", ... {len(cur.nodes) - _MAX_NODES} more" if len(cur.nodes) > _MAX_NODES else ""
        lines.append(f"nodes {len(cur.nodes)}  {shown}{more}")
    rows = sorted(cur.durables, key=lambda d: (-d.lag, -d.pending, d.org, d.name))
    width = max([len("DURABLE"), *(len(f"{d.org}/{d.name}") for d in rows[:_MAX_DURABLES])])
    lines.append(
        f"{'DURABLE':<{width}}  {'PENDING':>8}  {'READY':>8}  {'LAG':>8}  {'STREAMS':>7}  "
        f"{'DEAD':>6}"
    )
    for d in rows[:_MAX_DURABLES]:
        dead = f"{d.dead_letters}+" if d.dead_letters_capped else str(d.dead_letters)
        lines.append(
            f"{d.org + '/' + d.name:<{width}}  {d.pending:>8}  {d.ready:>8}  {d.lag:>8}  "
            f"{d.connected:>7}  {dead:>6}"
        )
    if len(rows) > _MAX_DURABLES:
        lines.append(f"... and {len(rows) - _MAX_DURABLES} more durables")
    if not rows:
        lines.append("(no active durables)")
    return lines


async def run_top(
    status: Callable[[], Awaitable[NodeStatus]],
    write: Callable[[str], None],
    *,
    tty: bool,
    interval: float = 1.0,
    count: int = 0,
    once: bool = False,
) -> None:
    """Shows the view every ``interval`` seconds, ``count`` times (0: until cancelled);
    ``once``: one view, its rates over one interval. ``status`` is ``client.admin.status``."""
    fetch = status
    prev = await fetch()
    if once:
        await asyncio.sleep(interval)
        write("\n".join(render(await fetch(), prev)) + "\n")
        return
    shown = 0
    cur: NodeStatus | None = prev
    prev_shown: NodeStatus | None = None
    while True:
        assert cur is not None
        view = "\n".join(render(cur, prev_shown))
        write(_CLEAR + view + "\n" if tty else "--\n" + view + "\n")
        shown += 1
        if count and shown >= count:
            return
        await asyncio.sleep(interval)
        prev_shown, cur = cur, await fetch()
