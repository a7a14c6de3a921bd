"""What only the SQLite store does: its file format and the upgrade of older files. The
role contracts it shares with other backends are in ``contracts/``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lockgate.broker import wire
from lockgate.broker.errors import FailedPrecondition, Unavailable
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import AuditQuery, AuditRecord, Batch, LogPosition
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.store.sqlite_schema import SCHEMA_VERSION

_V1 = """
CREATE TABLE batches (first_id INTEGER PRIMARY KEY, last_id INTEGER NOT NULL,
    org TEXT NOT NULL, subject TEXT NOT NULL, count INTEGER NOT NULL,
    policy_version TEXT NOT NULL, body BLOB NOT NULL, publisher TEXT NOT NULL DEFAULT '');
CREATE TABLE consumers (org TEXT NOT NULL, name TEXT NOT NULL, config TEXT NOT NULL,
    cursor INTEGER NOT NULL, pending TEXT NOT NULL, PRIMARY KEY (org, name));
CREATE TABLE dead_letters (org TEXT NOT NULL, durable TEXT NOT NULL, id INTEGER NOT NULL,
    attempts INTEGER NOT NULL, dead_ms INTEGER NOT NULL, PRIMARY KEY (org, durable, id));
"""


def make_batch(gen: IdGenerator, org: str, subject: str, n: int) -> Batch:
    ids = gen.next_block(n)
    sf = wire.subject_field(subject)
    body = b"".join(wire.delivery_frame(i, sf, b"\x0a\x01x") for i in ids)
    return Batch(ids[0], ids[-1], org, subject, n, "v1", body)


async def test_a_version_1_file_is_upgraded(tmp_path: Path) -> None:
    gen = IdGenerator(0)
    a, b, c = (make_batch(gen, "o", "x.y", 3) for _ in range(3))
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.executescript(_V1)
    for x in (c, a, b):  # row order differs from id order
        conn.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?)",
            (x.first_id, x.last_id, x.org, x.subject, x.count, "v1", x.body, ""),
        )
    config = {"pattern": "x.>", "ack_wait_ms": 1000, "max_deliveries": 4, "max_in_flight": 10}
    # Delivered up to the middle of b, with one of a's events still pending.
    cursor = b.first_id + 1
    conn.execute(
        "INSERT INTO consumers VALUES (?,?,?,?,?)",
        ("o", "d1", json.dumps(config), cursor, json.dumps([[a.last_id, 2]])),
    )
    conn.commit()
    conn.close()

    s = SqliteStore(tmp_path)
    await s.open()
    try:
        assert [x.first_id for x in await s.read_log("o", LogPosition(0))] == [
            a.first_id,
            b.first_id,
            c.first_id,
        ]
        (rec,) = await s.load_consumers()
        assert rec.pending == {a.last_id: 2} and rec.max_deliveries == 4
        # The position continues inside b, after the cursor id.
        (_, sb, _) = [x.seq for x in await s.read_log("o", LogPosition(0))]
        assert rec.position == (sb, cursor) and rec.delivered_id == cursor
        (seq,) = await s.append([make_batch(gen, "o", "x.y", 1)])
        assert seq == 4
    finally:
        await s.close()
    s = SqliteStore(tmp_path)  # the upgrade ran once; a reopen reads version 2 as it is
    await s.open()
    assert len(await s.load_consumers()) == 1
    await s.close()


async def test_a_version_3_file_gains_the_audit_table(tmp_path: Path) -> None:
    gen = IdGenerator(0)
    s = SqliteStore(tmp_path)
    await s.open()
    await s.append([make_batch(gen, "o", "x.y", 2)])
    await s.close()
    # What version 3 wrote: the same tables without the audit log's.
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.execute("DROP TABLE audit")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    s = SqliteStore(tmp_path)
    await s.open()
    try:
        assert len(await s.read_log("o", LogPosition(0))) == 1
        await s.append_audit([AuditRecord(1, "policy.put")])
        assert [r.action for r in await s.query_audit(AuditQuery())] == ["policy.put"]
    finally:
        await s.close()
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_version_4_file_gets_key_expiry(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.execute(
        "CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, "
        "org TEXT NOT NULL, agent TEXT NOT NULL, roles TEXT NOT NULL, "
        "created_ms INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute("INSERT INTO api_keys VALUES ('k1', 'h', 'acme', 'a1', '[\"admin\"]', 5, 0)")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    s = SqliteStore(tmp_path)
    await s.open()
    try:
        (key,) = await s.list_keys()
        assert (key.key_id, key.roles, key.expires_ms, key.replaced_by) == ("k1", ("admin",), 0, "")
    finally:
        await s.close()
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    conn.close()


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    s = SqliteStore(tmp_path)
    with pytest.raises(FailedPrecondition, match="schema version 99, newer"):
        await s.open()
    await s.close()


def test_fsync_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be one of"):
        SqliteStore(tmp_path, fsync="sometimes")


async def test_a_version_2_file_gets_the_scan_indexes(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path)
    await s.open()
    await s.close()
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    conn.execute("DROP INDEX batches_org_seq")
    conn.execute("DROP INDEX batches_org_id")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    s = SqliteStore(tmp_path)
    await s.open()
    await s.close()
    conn = sqlite3.connect(tmp_path / "lockgate.db")
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert {"batches_org_seq", "batches_org_id"} <= names and version == SCHEMA_VERSION


async def test_on_stored_has_the_sequences_before_the_write_completes(tmp_path: Path) -> None:
    """The ephemeral fan-out hangs on ``on_stored``: the embedded store calls it in the
    commit's own step, before the write's future is done (not a loop turn later, behind
    whatever grpc completed meanwhile), and never for a write that failed."""
    s = SqliteStore(tmp_path, fsync="never")
    await s.open()
    try:
        batch = make_batch(IdGenerator(0), "o", "a.b", 2)
        heard: list[tuple[list[int], bool]] = []
        write = s.append([batch], lambda seqs: heard.append((seqs, write.done())))
        seqs = await write
        assert heard == [(seqs, False)]

        heard.clear()
        again = s.append([batch], lambda seqs: heard.append((seqs, again.done())))
        with pytest.raises(Unavailable):  # the same first id again: the commit fails
            await again
        assert heard == []
    finally:
        await s.close()
