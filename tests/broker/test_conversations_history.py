"""History on join ("the last N messages") reads back from now, not from the start of the
conversation: its first read starts a minute back and widens only while it holds fewer."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.conversations import history
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore

ANN = Principal("acme", "ann", frozenset())


async def _group_with(tmp_path: Path, count: int) -> tuple[Broker, str, list[int]]:
    node = Broker(Config(data_dir=str(tmp_path)), SqliteStore(tmp_path))
    await node.start()
    rec = await node.conversations.create(ANN, "group", ["bob"], {})
    ids = [
        (await node.conversations.send(ANN, rec.conversation_id, b"m%d" % i, "text/plain", {})).id
        for i in range(count)
    ]
    return node, rec.conversation_id, ids


async def test_last_n_starts_near_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node, cid, ids = await _group_with(tmp_path, 6)
    reads: list[int] = []
    read_stored = node.read_stored

    async def counted(org: str, subject: str, after: int, start_ms: int, limit: int):  # type: ignore[no-untyped-def]
        reads.append(after)
        return await read_stored(org, subject, after, start_ms, limit)

    monkeypatch.setattr(node, "read_stored", counted)
    try:
        got, cursor = await node.conversations.history(ANN, cid, last_n=2)
        assert [e.id for e in got] == ids[-2:] and cursor == 0
        assert reads and reads[0] > 0  # a window near now, not the conversation's start
    finally:
        await node.stop()


async def test_last_n_widens_until_it_has_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, cid, ids = await _group_with(tmp_path, 5)
    # Ten minutes later: the first two windows (1 and 8 minutes) hold nothing.
    real_now = history.now_ms
    monkeypatch.setattr(history, "now_ms", lambda: real_now() + 600_000)
    try:
        got, _ = await node.conversations.history(ANN, cid, last_n=3)
        assert [e.id for e in got] == ids[-3:]
        got, _ = await node.conversations.history(ANN, cid, last_n=50)
        assert [e.id for e in got] == ids  # fewer than asked: every one, from the floor
    finally:
        await node.stop()
