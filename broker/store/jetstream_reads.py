"""The JetStream log's reads: batches in commit order through short-lived pull consumers
filtered server-side, start positions by id, and the newest id."""

from __future__ import annotations

import base64
import contextlib
import datetime
from collections.abc import Callable

from lockgate.broker.backbone.logformat import log_filter
from lockgate.broker.ids import time_ms_of
from lockgate.broker.store import SCAN_BUDGET, Batch, LogPosition, LogScan
from lockgate.broker.store.jetstream_stream import (
    _MARGIN_MS,
    _PULL,
    JsStream,
    _Msg,
    _parse_headers,
)

__all__ = ["JsReads"]


class JsReads(JsStream):
    """Reads the stream in commit order."""

    def _start(self, seq: int) -> dict[str, object]:
        if seq <= 1:
            return {"deliver_policy": "all"}
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": seq}

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        scan = await self.scan_log(org, start, _everything, limit=limit, budget=limit)
        return scan.batches

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
        pattern: str | None = None,
    ) -> LogScan:
        """Batches of ``org`` from ``start`` whose subject ``match`` accepts, in commit order:
        the consumer's filter holds the org (and ``pattern`` when given), so what it skips
        costs nothing here; ``budget`` bounds the messages looked at in this step."""
        name, pending = await self._consumer(
            log_filter(org, pattern or ">", prefix=self.root), self._start(start.seq)
        )
        found: list[Batch] = []
        nxt = start.seq
        looked = 0
        try:
            while pending and looked < budget and len(found) < limit:
                want = min(budget - looked, limit - len(found) if pattern else _PULL, pending)
                msgs = await self._pull(name, want)
                if not msgs:
                    pending = 0
                    break
                for m in msgs:
                    looked += 1
                    nxt = m.seq + 1
                    pending = m.pending
                    batch = self._decode(m)
                    if batch is not None and batch.org == org and match(batch.subject):
                        found.append(batch)
                        if len(found) >= limit:
                            break
        finally:
            await self._drop(name)
        return LogScan(found, nxt, pending == 0)

    async def position_after_id(self, event_id: int) -> LogPosition:
        """The first batch (by sequence) holding an id above ``event_id``, read from a little
        before that id's time; the reader skips its ids up to ``event_id``."""
        since = time_ms_of(event_id) - _MARGIN_MS
        when = datetime.datetime.fromtimestamp(max(since, 0) / 1000, datetime.UTC)
        walk = self._walk(
            log_filter(None, prefix=self.root),
            {"deliver_policy": "by_start_time", "opt_start_time": when.isoformat()},
            headers_only=True,
        )
        async with contextlib.aclosing(walk):
            async for m, b in walk:
                if b.last_id > event_id:
                    return LogPosition(m.seq, event_id)
        return LogPosition(max(self._committed, await self._last_seq()) + 1, 0)

    async def batch_containing(self, org: str, event_id: int) -> Batch | None:
        """The batch of ``org`` holding ``event_id``, read from the log (for what the
        history has not logged yet): from the first batch holding an id at or above it, a
        bounded look at the org's next batches (another node's clock may order them a
        little differently)."""
        start = await self.position_after_id(max(0, event_id - 1))
        scan = await self.scan_log(org, LogPosition(start.seq), _everything, limit=64, budget=256)
        for b in scan.batches:
            if b.first_id <= event_id <= b.last_id:
                return b
        return None

    async def recent_batches(self, after_id: int) -> list[Batch]:
        """Every org's batches above ``after_id`` (at most 10,000, by id): the dedup window's
        rebuild. A cluster with the shared (Redis) window does not need it."""
        since = time_ms_of(after_id) - _MARGIN_MS if after_id else 0
        when = datetime.datetime.fromtimestamp(max(since, 0) / 1000, datetime.UTC)
        start: dict[str, object] = (
            {"deliver_policy": "by_start_time", "opt_start_time": when.isoformat()}
            if after_id
            else {"deliver_policy": "all"}
        )
        out: list[Batch] = []
        walk = self._walk(log_filter(None, prefix=self.root), start)
        async with contextlib.aclosing(walk):
            async for _, b in walk:
                if b.first_id > after_id:
                    out.append(b)
                    if len(out) >= 10_000:
                        break
        out.sort(key=lambda b: b.first_id)
        return out

    async def last_id(self) -> int:
        """The last id of the newest batch (the id generator's floor at start)."""
        seq = await self._last_seq()
        if not seq:
            return 0
        got = await self._api(f"STREAM.MSG.GET.{self.stream}", {"seq": seq})
        if "error" in got:
            return 0
        message = got["message"]
        headers = _parse_headers(base64.b64decode(message.get("hdrs", "")))
        b = self._decode(_Msg(message["subject"], headers, b"", seq, 0))
        return b.last_id if b is not None else 0


def _everything(subject: str) -> bool:
    return True
