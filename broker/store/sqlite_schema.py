"""The SQLite store's tables, and the upgrade of a data directory written by an older version.

``PRAGMA user_version`` holds the schema version. Version 1 (before 0.2) had no log sequence
and kept a durable's state as one JSON blob (cursor id + whole pending map); opening such a
file upgrades it in place, in one transaction: batches get sequences in id order (the order
version 1 assumed they committed in), each durable's cursor id becomes the position after
that id, and its pending map becomes rows. Version 3 adds the covering indexes that filtered
reads of one org walk in log order and in id order (``batches_org_seq``, ``batches_org_id``):
opening a version 2 file builds them. Version 4 adds the audit log's table (created by the
same upgrade step: every table is ``CREATE ... IF NOT EXISTS``). Version 5 gives API keys an
expiry and the id of the key that replaced them (two columns with defaults: "never", "none").
The conversations' tables (``conversations``, ``conversation_members``,
``conversation_receipts``, ``agent_keys``, ``group_keys``) are new tables of version 5,
created on open like any table added since.
The backbone registry (``backbones``) and the config store (``config_versions``) are new
tables in version 5 (no upgrade step: ``CREATE TABLE IF NOT EXISTS`` at every open).
A file written by a newer version is refused with a sentence rather than misread.
"""

from __future__ import annotations

import json
import sqlite3

from lockgate.broker.errors import FailedPrecondition

__all__ = ["SCHEMA_VERSION", "ensure_schema", "position_after_id"]

SCHEMA_VERSION = 5

_TABLES = """
CREATE TABLE IF NOT EXISTS batches (
    first_id INTEGER PRIMARY KEY,
    last_id INTEGER NOT NULL,
    org TEXT NOT NULL,
    subject TEXT NOT NULL,
    count INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    body BLOB NOT NULL,
    publisher TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_org_subject ON batches (org, subject, first_id);
CREATE INDEX IF NOT EXISTS batches_org_seq ON batches (org, seq, subject);
CREATE INDEX IF NOT EXISTS batches_org_id ON batches (org, first_id, last_id, subject);
CREATE TABLE IF NOT EXISTS consumers (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    position_seq INTEGER NOT NULL,
    position_id INTEGER NOT NULL,
    delivered_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org, name)
);
CREATE TABLE IF NOT EXISTS consumer_pending (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (org, name, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    org TEXT NOT NULL,
    durable TEXT NOT NULL,
    id INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    dead_ms INTEGER NOT NULL,
    PRIMARY KEY (org, durable, id)
);
CREATE TABLE IF NOT EXISTS policy_versions (
    version TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    files TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS org_policy_versions (
    org TEXT NOT NULL,
    version TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    files TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org, version)
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    org TEXT NOT NULL,
    agent TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER NOT NULL DEFAULT 0,
    replaced_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    org TEXT NOT NULL,
    agent TEXT NOT NULL,
    credential TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    surface TEXT NOT NULL,
    peer TEXT NOT NULL,
    count INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_ms);
CREATE INDEX IF NOT EXISTS audit_org ON audit (org, id);
CREATE TABLE IF NOT EXISTS conversations (
    org TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    closed_ms INTEGER NOT NULL,
    key_epoch INTEGER NOT NULL,
    history_for_new INTEGER NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE TABLE IF NOT EXISTS conversation_members (
    org TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    role TEXT NOT NULL,
    joined_ms INTEGER NOT NULL,
    invited_by TEXT NOT NULL,
    PRIMARY KEY (org, conversation_id, agent)
);
CREATE TABLE IF NOT EXISTS conversation_receipts (
    org TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    delivered_id INTEGER NOT NULL,
    read_id INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (org, conversation_id, agent)
);
CREATE TABLE IF NOT EXISTS agent_keys (
    org TEXT NOT NULL,
    agent TEXT NOT NULL,
    public_key BLOB NOT NULL,
    identity_key BLOB NOT NULL,
    signature BLOB NOT NULL,
    published_ms INTEGER NOT NULL,
    PRIMARY KEY (org, agent)
);
CREATE TABLE IF NOT EXISTS group_keys (
    org TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    agent TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    sealed_by TEXT NOT NULL,
    signature BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (org, conversation_id, agent, epoch)
);
CREATE TABLE IF NOT EXISTS backbones (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    orgs TEXT NOT NULL,
    clusters TEXT NOT NULL,
    region TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS backbone_orgs (
    org TEXT PRIMARY KEY,
    backbone_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS config_versions (
    version INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    origin TEXT NOT NULL,
    settings TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

_SEQ_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS batches_seq ON batches (seq)"


def _create_tables(c: sqlite3.Connection) -> None:
    # One statement at a time: executescript would commit the open transaction.
    for statement in _TABLES.split(";"):
        if statement.strip():
            c.execute(statement)


def position_after_id(c: sqlite3.Connection, event_id: int) -> tuple[int, int]:
    """The log position after which every event with an id above ``event_id`` lies: in the
    first batch (by sequence) holding such an event, skip the ids up to ``event_id``."""
    # Ids of batches committed out of id order differ by moments, not by the 1 s margin.
    row = c.execute(
        "SELECT MIN(seq) FROM batches WHERE first_id > ? - 4194304000 AND last_id > ?",
        (event_id, event_id),
    ).fetchone()
    if row[0] is not None:
        return int(row[0]), event_id
    top = c.execute("SELECT MAX(seq) FROM batches").fetchone()[0]
    return int(top or 0) + 1, 0


def _columns(c: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in c.execute(f"PRAGMA table_info({table})")}


def _upgrade_from_1(c: sqlite3.Connection) -> None:
    if "seq" not in _columns(c, "batches"):
        c.execute("ALTER TABLE batches ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        c.execute(
            "UPDATE batches SET seq = o.n FROM "
            "(SELECT first_id, ROW_NUMBER() OVER (ORDER BY first_id) AS n FROM batches) AS o "
            "WHERE batches.first_id = o.first_id"
        )
    if "pending" in _columns(c, "consumers"):
        old = c.execute("SELECT org, name, config, cursor, pending FROM consumers").fetchall()
        c.execute("ALTER TABLE consumers RENAME TO consumers_v1")
        _create_tables(c)
        for org, name, config, cursor, pending in old:
            seq, pos_id = position_after_id(c, int(cursor))
            c.execute(
                "INSERT INTO consumers VALUES (?,?,?,?,?,?)",
                (org, name, config, seq, pos_id, int(cursor)),
            )
            c.executemany(
                "INSERT OR REPLACE INTO consumer_pending VALUES (?,?,?,?)",
                [(org, name, int(i), int(a)) for i, a in json.loads(pending)],
            )
        c.execute("DROP TABLE consumers_v1")


def _upgrade_keys(c: sqlite3.Connection) -> None:
    columns = _columns(c, "api_keys")
    if columns and "expires_ms" not in columns:
        c.execute("ALTER TABLE api_keys ADD COLUMN expires_ms INTEGER NOT NULL DEFAULT 0")
    if columns and "replaced_by" not in columns:
        c.execute("ALTER TABLE api_keys ADD COLUMN replaced_by TEXT NOT NULL DEFAULT ''")


def ensure_schema(c: sqlite3.Connection, path: object) -> None:
    """Creates the tables, or upgrades an older file, or refuses a newer one."""
    version = int(c.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise FailedPrecondition(
            f"the store at {path} has schema version {version}, newer than this Lockgate "
            f"understands ({SCHEMA_VERSION})",
            reason="DATA_DIR_UNUSABLE",
            hint="run the Lockgate version that wrote it, or start with another --data-dir",
        )
    if version == SCHEMA_VERSION:
        # Tables added since this version was written (CREATE ... IF NOT EXISTS): a new
        # table needs no upgrade step.
        _create_tables(c)
        return
    c.execute("BEGIN IMMEDIATE")
    try:
        old = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'batches'"
        ).fetchone()
        if old is not None:
            _upgrade_from_1(c)
        _upgrade_keys(c)
        _create_tables(c)
        c.execute(_SEQ_INDEX)
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")
