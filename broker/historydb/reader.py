"""History reads on PostgreSQL: what ``broker.history.History`` asks of a store, answered
from ``history_events`` (the message logger's rows), and the lookup by CloudEvents id.

``History`` keeps the one query rule (pattern, time range, paging, read permission, dead
letters); this module only hands it batches, as the SQLite log does. A batch here is rebuilt
from rows: consecutive rows of one stored batch (the same stream sequence) become one
:class:`~broker.store.Batch` whose body is their delivery frames, byte for byte those the
node stored (``wire.delivery_frame`` of the id, the subject and the event bytes). A read
may cut a stored batch in two; ``History`` only looks at the ids.

Every read bounds the stored time (the id's time) as well as the id, so PostgreSQL prunes
the daily partitions it does not need.

Example::

    reader = PgHistoryReader(pool)
    history = History(reader)   # or a cluster store that delegates these methods
    events, cursor = await history.query("acme", "orders.>", limit=10)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import asyncpg

from lockgate.broker import wire
from lockgate.broker.historydb.schema import TABLE
from lockgate.broker.ids import MAX_ID, time_ms_of
from lockgate.broker.store import SCAN_BUDGET, Batch, LogScan
from lockgate.broker.store.pg_engine import pg_errors

__all__ = ["HistoryPosition", "PgHistoryReader"]

_ROW = f"SELECT id, seq, subject, policy_version, event FROM {TABLE}"
_EVERY_ROW = f"SELECT org, id, seq, subject, policy_version, event, publisher FROM {TABLE}"

HistoryPosition = tuple[str, int]
"""Where :meth:`PgHistoryReader.every_batch` stopped: the last ``(org, id)`` it read."""
_EVENTS_PER_BATCH = 16
"""Rows a read takes per batch asked for (``limit`` counts batches; a row is one event)."""
_MAX_ROWS = 4096


_UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _at(event_id: int) -> dt.datetime:
    """The stored time of an id (its partition key), exact to the millisecond."""
    return _UNIX + dt.timedelta(milliseconds=time_ms_of(max(0, event_id)))


def _batches(org: str, rows: Sequence[asyncpg.Record], *, publisher: bool = False) -> list[Batch]:
    """Consecutive rows of one stored batch as one batch; with ``publisher`` the rows have
    that column too (null before the column existed: no publisher)."""
    out: list[Batch] = []
    run: list[asyncpg.Record] = []

    def close() -> None:
        subject = run[0]["subject"]
        field = wire.subject_field(subject)
        body = b"".join(wire.delivery_frame(r["id"], field, r["event"]) for r in run)
        out.append(
            Batch(
                run[0]["id"],
                run[-1]["id"],
                org,
                subject,
                len(run),
                run[0]["policy_version"],
                body,
                (run[0]["publisher"] or "") if publisher else "",
                seq=run[0]["seq"],
            )
        )

    for r in rows:
        if run and (r["seq"] != run[0]["seq"] or r["subject"] != run[0]["subject"]):
            close()
            run = []
        run.append(r)
    if run:
        close()
    return out


class PgHistoryReader:
    """The history reads of ``broker.history.BatchReader`` over ``history_events``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]:
        """Batches of ``org`` (of ``subject``) holding ids above ``after_id``, by id."""
        if after_id >= MAX_ID:
            return []
        rows = min(limit * _EVENTS_PER_BATCH, _MAX_ROWS)
        async with pg_errors("read the history"):
            if subject is None:
                found = await self.pool.fetch(
                    f"{_ROW} WHERE org = $1 AND id > $2 AND stored_at >= $3 ORDER BY id LIMIT $4",
                    org,
                    after_id,
                    _at(after_id),
                    rows,
                )
            else:
                found = await self.pool.fetch(
                    f"{_ROW} WHERE org = $1 AND subject = $2 AND id > $3 AND stored_at >= $4 "
                    "ORDER BY id LIMIT $5",
                    org,
                    subject,
                    after_id,
                    _at(after_id),
                    rows,
                )
        return _batches(org, found)

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
    ) -> LogScan:
        """Batches of ``org`` whose subject ``match`` accepts, by id, above ``after_id``
        and below ``before_id`` (0: no bound), looking at no more than ``budget`` events;
        ``next`` is the last id looked at."""
        if after_id >= MAX_ID:
            return LogScan([], after_id, True)
        upper = before_id or MAX_ID
        async with pg_errors("read the history"):
            heads = await self.pool.fetch(
                f"SELECT id, subject FROM {TABLE} WHERE org = $1 AND id > $2 AND id < $3 "
                "AND stored_at >= $4 AND stored_at <= $5 ORDER BY id LIMIT $6",
                org,
                after_id,
                upper,
                _at(after_id),
                _at(upper),
                budget,
            )
        verdicts: dict[str, bool] = {}
        wanted: list[int] = []
        cap = min(limit * _EVENTS_PER_BATCH, _MAX_ROWS)
        nxt = after_id
        for event_id, subject in heads:
            ok = verdicts.get(subject)
            if ok is None:
                ok = verdicts[subject] = match(subject)
            nxt = event_id
            if ok:
                wanted.append(event_id)
                if len(wanted) >= cap:
                    break
        done = len(heads) < budget and (not heads or nxt == heads[-1]["id"])
        if not wanted:
            return LogScan([], nxt, done)
        async with pg_errors("read the history"):
            found = await self.pool.fetch(
                f"{_ROW} WHERE org = $1 AND id = ANY($2::bigint[]) "
                "AND stored_at >= $3 AND stored_at <= $4 ORDER BY id",
                org,
                wanted,
                _at(wanted[0]),
                _at(wanted[-1]),
            )
        return LogScan(_batches(org, found), nxt, done)

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        """The event ``event_id`` of ``org`` as a batch of one, or None."""
        if not 0 < event_id <= MAX_ID:
            return None
        async with pg_errors("read the history"):
            found = await self.pool.fetch(
                f"{_ROW} WHERE org = $1 AND id = $2 AND stored_at = $3",
                org,
                event_id,
                _at(event_id),
            )
        batches = _batches(org, found)
        return batches[0] if batches else None

    async def batches_by_cloudevent_id(
        self, org: str, cloudevent_id: str, after_id: int, *, before_id: int = 0, limit: int = 64
    ) -> list[Batch]:
        """The events of ``org`` whose CloudEvents id is ``cloudevent_id`` (any source),
        above ``after_id`` and below ``before_id`` (0: no bound), by id, as batches of
        one (the ``(org, ce_id)`` index finds them in every partition)."""
        if after_id >= MAX_ID:
            return []
        async with pg_errors("read the history"):
            found = await self.pool.fetch(
                f"{_ROW} WHERE org = $1 AND ce_id = $2 AND id > $3 AND id < $4 "
                "ORDER BY id LIMIT $5",
                org,
                cloudevent_id,
                after_id,
                before_id or MAX_ID,
                limit,
            )
        return [b for r in found for b in _batches(org, [r])]

    async def every_batch(
        self, since_ms: int, after: HistoryPosition = ("", 0), *, rows: int = _MAX_ROWS
    ) -> tuple[list[Batch], HistoryPosition | None]:
        """Batches of every org stored at or after ``since_ms`` (Unix ms), with their
        publishers, by org and then id, from just after ``after``; at most ``rows`` events
        a call. Returns them and where to go on (None: nothing is left). For ``lockgate
        policy replay``, which reads every org's traffic; the key ``(org, id, ...)`` orders
        the read, so a page costs what it returns."""
        since = _UNIX + dt.timedelta(milliseconds=max(0, since_ms))
        async with pg_errors("read the history"):
            found = await self.pool.fetch(
                f"{_EVERY_ROW} WHERE (org, id) > ($1, $2) AND stored_at >= $3 "
                "ORDER BY org, id LIMIT $4",
                after[0],
                after[1],
                since,
                rows,
            )
        out: list[Batch] = []
        start = 0
        for i in range(1, len(found) + 1):
            if i == len(found) or found[i]["org"] != found[start]["org"]:
                out += _batches(found[start]["org"], found[start:i], publisher=True)
                start = i
        if len(found) < rows:
            return out, None
        return out, (found[-1]["org"], found[-1]["id"])
