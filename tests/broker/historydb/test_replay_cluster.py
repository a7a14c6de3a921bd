"""``lockgate policy replay --store postgresql://…`` reads a cluster's history (the rows the
message logger writes, with their publishers) and reports what an embedded broker's log of the
same events reports; a database without Lockgate history, a store that is not PostgreSQL and
both sources at once are refused in one sentence, changing nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import asyncpg

from lockgate.broker import wire
from lockgate.broker.historydb.rows import event_rows
from lockgate.broker.historydb.writer import HistoryWriter
from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.publisher import encode_publisher
from lockgate.broker.store import Batch, PolicyVersionRecord
from lockgate.broker.store.pg_engine import connect_pool
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.policy import compile_policies
from lockgate.policy.files import new_parser
from tests.broker.historydb.conftest import event
from tests.broker.test_cli import lockgate

RUNNING = """\
policy billing on "billing.>" {
  allow publish when "billing" in principal.roles
}
"""
CANDIDATE = RUNNING.replace('"billing" in principal.roles', '"finance" in principal.roles')


def traffic() -> list[Batch]:
    """Ten minutes ago: bill-bot (billing) 3 events, fin-bot (billing, finance) 2, and 1 on
    another subject, in two orgs."""
    t = int(time.time() * 1000) - 600_000
    out = []
    for k, (org, subject, agent, roles, n) in enumerate(
        [
            ("acme", "billing.eu", "bill-bot", {"billing"}, 3),
            ("acme", "billing.us", "fin-bot", {"billing", "finance"}, 2),
            ("zeta", "orders.eu", "shop", set(), 1),
        ]
    ):
        ids = [id_for_time_ms(t + k) + i for i in range(n)]
        raw = [event(f"e{k}-{i}", '{"n": 1}').SerializeToString() for i in range(n)]
        body = b"".join(wire.delivery_frames(ids, wire.subject_field(subject), raw))
        publisher = encode_publisher(agent, frozenset(roles))
        out.append(Batch(ids[0], ids[-1], org, subject, n, "v1", body, publisher, seq=k + 1))
    return out


def policy_dir(root: Path, name: str, text: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "billing.policy").write_text(text)
    return d


async def test_replay_reads_a_clusters_history_as_the_embedded_log(
    tmp_path: Path, pg_fresh_dsn: str
) -> None:
    batches = traffic()
    running = {"billing.policy": RUNNING}
    version = PolicyVersionRecord(
        compile_policies(running, new_parser()).version, 1, "test", running, True
    )
    # The cluster: the logger's write path, and the running set in the metadata store.
    pool = await connect_pool(pg_fresh_dsn, min_size=1, max_size=2)
    try:
        writer = HistoryWriter(pool)
        await writer.prepare()
        assert await writer.write([r for b in batches for r in event_rows(b)]) == 6
        meta = PgStore(pool=pool)
        await meta.open()
        await meta.save_policy_version(version, activate=True)
        await meta.close()
    finally:
        await pool.close()
    # The same events in an embedded broker's log.
    sqlite = SqliteStore(tmp_path / "data", fsync="never")
    await sqlite.open()
    await sqlite.append(batches)
    await sqlite.save_policy_version(version, activate=True)
    await sqlite.close()

    candidate = policy_dir(tmp_path, "candidate", CANDIDATE)
    common = ("policy", "replay", str(candidate), "--since", "-1h", "--json")
    cluster = lockgate(*common, "--store", pg_fresh_dsn)
    assert cluster.returncode == 0, cluster.stderr
    embedded = lockgate(*common, "--data-dir", str(tmp_path / "data"))
    assert embedded.returncode == 0, embedded.stderr
    report = json.loads(cluster.stdout)
    assert report == json.loads(embedded.stdout)
    # bill-bot's three events would be denied; fin-bot holds finance; orders.* is untouched
    # (no policy: the default denies under both sets).
    assert (report["total"], report["changed"], report["newly_denied"]) == (6, 3, 3)
    assert report["current"] == version.version

    text = lockgate("policy", "replay", str(candidate), "--store", pg_fresh_dsn)
    assert text.returncode == 0, text.stderr
    assert "3 of 6 decisions change: 3 newly denied" in text.stdout
    assert "billing.eu type=t.created by acme/bill-bot: allow" in text.stdout


async def test_replay_refuses_a_database_without_history(tmp_path: Path, pg_fresh_dsn: str) -> None:
    candidate = policy_dir(tmp_path, "candidate", CANDIDATE)
    proc = lockgate("policy", "replay", str(candidate), "--store", pg_fresh_dsn)
    assert proc.returncode == 2
    assert "holds no Lockgate history" in proc.stderr
    assert "Traceback" not in proc.stderr
    conn = await asyncpg.connect(pg_fresh_dsn)
    try:  # reading created nothing
        assert await conn.fetchval("SELECT to_regclass('lockgate_schema')") is None
    finally:
        await conn.close()


def test_replay_refuses_two_sources_and_a_store_that_is_not_postgresql(tmp_path: Path) -> None:
    candidate = policy_dir(tmp_path, "candidate", CANDIDATE)
    both = lockgate(
        "policy", "replay", str(candidate), "--data-dir", str(tmp_path), "--store", "postgresql://x"
    )
    assert both.returncode == 2
    assert "give --data-dir or --store, not both" in both.stderr
    other = lockgate("policy", "replay", str(candidate), "--store", "redis://127.0.0.1:6379/0")
    assert other.returncode == 2
    assert "--store takes a cluster's PostgreSQL database" in other.stderr
