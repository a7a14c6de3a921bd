"""The JetStream log's retention: the stream's ``max_age`` when a ``>`` rule bounds every
subject, purges per subject by filter for narrower rules."""

from __future__ import annotations

from collections.abc import Sequence

from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.store import RetentionRule
from lockgate.broker.store.jetstream_stream import JsStream, _unavailable
from lockgate.broker.subjects import compile_pattern

__all__ = ["JsRetention", "events_past_age", "events_past_count"]


def events_past_age(counts: Sequence[tuple[int, int, int]], cutoff_id: int) -> tuple[int, int]:
    """For the batches ``(seq, last_id, count)`` of one subject in stream order: the first
    sequence to keep when everything whose ids all lie below ``cutoff_id`` goes, and how many
    events go (oldest first: the first batch with a newer event stops the cut)."""
    removed = 0
    for seq, last_id, count in counts:
        if last_id >= cutoff_id:
            return seq, removed
        removed += count
    return (counts[-1][0] + 1 if counts else 0), removed


def events_past_count(counts: Sequence[tuple[int, int, int]], max_events: int) -> tuple[int, int]:
    """Like :func:`events_past_age` for keeping at most ``max_events`` events: whole
    batches go, oldest first."""
    kept = 0
    for n in range(len(counts) - 1, -1, -1):
        kept += counts[n][2]
        if kept > max_events:
            return counts[n][0] + 1, sum(c for _, _, c in counts[: n + 1])
    return (counts[0][0] if counts else 0), 0


class JsRetention(JsStream):
    """Trims the stream by retention rules."""

    async def _subjects(self) -> dict[str, int]:
        """Every stored NATS subject of the log and its message count."""
        out: dict[str, int] = {}
        offset = 0
        while True:
            info = await self._api(
                f"STREAM.INFO.{self.stream}",
                {"subjects_filter": f"{self.root}.>", "offset": offset},
            )
            if "error" in info:
                raise _unavailable("list the log's subjects", info["error"].get("description"))
            page = info.get("state", {}).get("subjects") or {}
            out.update(page)
            offset += len(page)
            if not page or offset >= int(info.get("total", 0)):
                return out

    async def _counts(self, nats_subject: str) -> list[tuple[int, int, int]]:
        """``(seq, last_id, count)`` of every batch of one subject, from its headers."""
        walk = self._walk(nats_subject, {"deliver_policy": "all"}, headers_only=True)
        return [(m.seq, b.last_id, b.count) async for m, b in walk]

    async def _purge(self, nats_subject: str, keep_from: int) -> None:
        done = await self._api(
            f"STREAM.PURGE.{self.stream}", {"filter": nats_subject, "seq": keep_from}
        )
        if "error" in done:
            raise _unavailable("purge the log", done["error"].get("description"))

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int) -> int:
        """Applies ``rules``; returns the events removed by purges (what the stream's
        ``max_age`` removes on its own is not counted)."""
        wide = [r.max_age_ms for r in rules if r.pattern == ">" and r.max_age_ms]
        longest = max((r.max_age_ms for r in rules), default=0) if wide else 0
        if longest / 1000 != self._max_age_s:
            await self._update_stream(longest / 1000)
        subjects = await self._subjects()
        removed = 0
        for rule in rules:
            match = compile_pattern(rule.pattern)
            for nats_subject in subjects:
                # <prefix>.<org token>.<subject>: a token holds no ".".
                subject = nats_subject[len(self.root) + 1 :].partition(".")[2]
                if not match(subject):
                    continue
                counts = await self._counts(nats_subject)
                if rule.max_age_ms:
                    cut, gone = events_past_age(counts, id_for_time_ms(now_ms - rule.max_age_ms))
                    if gone:
                        await self._purge(nats_subject, cut)
                        removed += gone
                        counts = [c for c in counts if c[0] >= cut]
                if rule.max_events:
                    cut, gone = events_past_count(counts, rule.max_events)
                    if gone:
                        await self._purge(nats_subject, cut)
                        removed += gone
        return removed
