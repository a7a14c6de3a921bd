"""The audit table's SQL, shared by the SQLite and PostgreSQL stores: one row layout and one
query rule, each store giving only its placeholder style (``?`` or ``$n``).

>>> args: list[object] = []
>>> select(AuditQuery(org="acme", limit=5), lambda v: args.append(v) or "?")[-48:]
'WHERE id > ? AND org = ? ORDER BY id ASC LIMIT ?'
>>> args
[0, 'acme', 5]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from lockgate.broker.ids import MAX_ID
from lockgate.broker.store import AuditQuery, AuditRecord

__all__ = ["insert", "record", "row", "select"]

_WRITTEN = (
    "time_ms",
    "org",
    "agent",
    "credential",
    "action",
    "target",
    "outcome",
    "surface",
    "peer",
    "count",
    "detail",
)
_READ = ("id", *_WRITTEN)


def insert(placeholder: Callable[[int], str]) -> str:
    """The INSERT of one :func:`row`; ``placeholder(n)`` is the n-th value's (from 1)."""
    values = ",".join(placeholder(n) for n in range(1, len(_WRITTEN) + 1))
    return f"INSERT INTO audit ({', '.join(_WRITTEN)}) VALUES ({values})"


def row(r: AuditRecord) -> tuple[object, ...]:
    """The values :func:`insert` writes (the id is the store's)."""
    detail = json.dumps(dict(r.detail), sort_keys=True)
    return (
        *(r.time_ms, r.org, r.agent, r.credential, r.action, r.target),
        *(r.outcome, r.surface, r.peer, r.count, detail),
    )


def record(values: Sequence[Any]) -> AuditRecord:
    """The record of a row that :func:`select` read."""
    i, time_ms, org, agent, cred, action, target, outcome, surface, peer, count, detail = values
    return AuditRecord(
        time_ms=time_ms,
        action=action,
        outcome=outcome,
        org=org,
        agent=agent,
        credential=cred,
        target=target,
        surface=surface,
        peer=peer,
        count=count,
        detail=json.loads(detail),
        id=i,
    )


def select(query: AuditQuery, arg: Callable[[object], str]) -> str:
    """The SELECT for ``query``; ``arg`` takes each value in order and returns its
    placeholder."""
    if query.newest_first:
        where = [f"id < {arg(query.after_id or MAX_ID)}"]
    else:
        where = [f"id > {arg(query.after_id)}"]
    if query.start_ms:
        where.append(f"time_ms >= {arg(query.start_ms)}")
    if query.end_ms:
        where.append(f"time_ms < {arg(query.end_ms)}")
    for column in ("org", "agent", "outcome"):
        value = getattr(query, column)
        if value is not None and (value or column == "org"):
            where.append(f"{column} = {arg(value)}")
    if query.action:
        # The action itself or any below it; LIKE's wildcards in it are taken literally.
        escaped = query.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(
            f"(action = {arg(query.action)} OR action LIKE {arg(escaped + '.%')} ESCAPE '\\')"
        )
    order = "DESC" if query.newest_first else "ASC"
    return (
        f"SELECT {', '.join(_READ)} FROM audit WHERE {' AND '.join(where)} "
        f"ORDER BY id {order} LIMIT {arg(max(query.limit, 0))}"
    )
