"""The window of recent commits on its own: consecutive sequences, a budget, gaps."""

from __future__ import annotations

from lockgate.broker.delivery.recent import RecentCommits
from lockgate.broker.store import Batch


def _batch(first: int, count: int = 2, body: bytes = b"xx") -> Batch:
    return Batch(first, first + count - 1, "o", "s", count, "", body)


def _frames(b: Batch) -> list[tuple[int, bytes]]:
    return [(i, b"f") for i in range(b.first_id, b.last_id + 1)]


def test_reads_from_a_sequence_on_in_pages() -> None:
    recent = RecentCommits()
    for seq in range(1, 6):
        b = _batch(seq * 10)
        recent.add(b, seq, _frames(b))
    assert (recent.first_seq, recent.last_seq, len(recent)) == (1, 5, 5)
    page = recent.since(2, limit=2)
    assert page is not None and [seq for seq, _, _ in page] == [2, 3]
    assert page[0][1].first_id == 20 and page[0][2] == [(20, b"f"), (21, b"f")]
    assert recent.since(6, limit=2) == []  # committed later: not held yet, nothing missed
    assert recent.since(9, limit=2) == []


def test_older_than_the_window_or_empty_means_the_store() -> None:
    recent = RecentCommits()
    assert recent.since(1, limit=8) is None
    b = _batch(10)
    recent.add(b, 4, _frames(b))
    assert recent.since(3, limit=8) is None
    page = recent.since(4, limit=8)
    assert page is not None and len(page) == 1


def test_a_missing_sequence_empties_the_window() -> None:
    recent = RecentCommits()
    for seq in (1, 2, 4):  # 3 was never handed over
        b = _batch(seq * 10)
        recent.add(b, seq, _frames(b))
    assert (recent.first_seq, recent.last_seq) == (4, 4)
    assert recent.since(3, limit=8) is None  # read from the store, never skipped


def test_the_budget_drops_the_oldest() -> None:
    # Each batch costs its body plus a per-event allowance; the newest always stays.
    recent = RecentCommits(budget_bytes=1000, max_batches=100)
    for seq in range(1, 11):
        b = _batch(seq * 10, count=2, body=b"x" * 200)
        recent.add(b, seq, _frames(b))
    assert recent.last_seq == 10 and 1 < recent.first_seq <= 10
    assert recent.since(1, limit=8) is None
    by_count = RecentCommits(budget_bytes=1 << 30, max_batches=3)
    for seq in range(1, 11):
        b = _batch(seq * 10)
        by_count.add(b, seq, _frames(b))
    assert (by_count.first_seq, by_count.last_seq) == (8, 10)
    huge = RecentCommits(budget_bytes=10)
    b = _batch(10, body=b"x" * 100)
    huge.add(b, 1, _frames(b))
    assert len(huge) == 1
