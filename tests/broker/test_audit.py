"""The audit log's recorder (``broker.audit``): aggregation, the bounded queue, who and where
from the call's context, retention; and, in process, that a flood of denied publishes stays
off the admitted publishers' path."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lockgate.broker import actor
from lockgate.broker.actor import credential_id
from lockgate.broker.audit import AuditLog
from lockgate.broker.audit_read import audit_scope
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.errors import PermissionDenied
from lockgate.broker.node import Broker
from lockgate.broker.permissions import Permissions
from lockgate.broker.policies import PolicyManager
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store import AuditQuery, AuditRecord
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from tests.support import eventually

ACME = Principal("acme", "a1", frozenset())
ACME_ADMIN = Principal("acme", "root", frozenset({"admin"}))
SECRETS = """\
policy secrets on "secret.>" {
  closed: deny publish, subscribe because "secrets are closed"
}
"""


def denial(rule: str = "secrets.policy:2") -> PermissionDenied:
    return PermissionDenied(
        "publish denied", reason="POLICY_DENIED", metadata={"rule": rule, "effect": "deny"}
    )


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path, fsync="never")
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def all_records(s: SqliteStore) -> list[AuditRecord]:
    return await s.query_audit(AuditQuery(limit=10_000))


async def test_a_record_names_the_caller_and_where_it_came_from(store: SqliteStore) -> None:
    log = AuditLog(store)

    async def call() -> None:  # a call's own task, as a gRPC call or an HTTP request has
        actor.enter("grpc", "ipv4:127.0.0.1:4242")
        actor.authenticated(ACME, credential_id("lg_k123_secretpart"))
        log.record("durable.delete", target="billing")

    await asyncio.create_task(call())
    log.record("policy.reload", detail={"version": "v9"})  # outside any call: the broker's
    await log.flush()
    first, second = await all_records(store)
    assert (first.org, first.agent, first.credential) == ("acme", "a1", "k123")
    assert (first.surface, first.peer, first.action, first.target) == (
        "grpc",
        "ipv4:127.0.0.1:4242",
        "durable.delete",
        "billing",
    )
    assert (second.surface, second.org, second.detail) == ("broker", "", {"version": "v9"})


def test_credential_ids_never_hold_the_secret() -> None:
    assert credential_id("lg_abc_s3cr3t") == "abc"
    assert credential_id(None) == credential_id("") == ""
    other = credential_id("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl")
    assert other.startswith("sha256:") and "eyJ" not in other


async def test_denials_aggregate_per_principal_action_subject_and_rule(
    store: SqliteStore,
) -> None:
    log = AuditLog(store, window=3600)  # the window ends when the test says (stop)
    for _ in range(500):
        log.denied("publish", "secret.pay", denial(), 2, principal=ACME)
    log.denied("publish", "secret.pay", denial("other:1"), principal=ACME)
    log.denied("subscribe", "secret.>", denial(), principal=ACME)
    await log.flush()
    # The first of each kind is written at once; the repeats wait for the window's end.
    firsts = await all_records(store)
    assert [(r.action, r.count, r.detail["rule"]) for r in firsts] == [
        ("publish", 2, "secrets.policy:2"),
        ("publish", 1, "other:1"),
        ("subscribe", 1, "secrets.policy:2"),
    ]
    assert firsts[0].outcome == "denied" and firsts[0].detail["reason"] == "POLICY_DENIED"
    await log.stop()
    rest = (await all_records(store))[3:]
    assert [(r.action, r.target, r.count) for r in rest] == [("publish", "secret.pay", 998)]
    assert int(rest[0].detail["last_time_ms"]) >= rest[0].time_ms
    assert sum(r.count for r in await all_records(store) if r.action == "publish") == 1001


async def test_auth_failures_aggregate_per_peer_host_whatever_the_port_or_key(
    store: SqliteStore,
) -> None:
    log = AuditLog(store, window=3600)
    err = PermissionDenied("x")  # any BrokerError: its reason is what is kept

    async def attempt(port: int, host: str = "10.0.0.7") -> None:
        actor.enter("grpc", f"ipv4:{host}:{port}")
        actor.authenticated(None, credential_id(f"lg_k{port}_guess"))
        log.auth_failed(err)

    for port in range(1000, 1300):
        await asyncio.create_task(attempt(port))
    await asyncio.create_task(attempt(5, "10.0.0.8"))
    await log.stop()
    recs = await all_records(store)
    assert [(r.action, r.outcome, r.peer, r.count) for r in recs] == [
        ("auth", "failed", "ipv4:10.0.0.7:1000", 1),
        ("auth", "failed", "ipv4:10.0.0.8:5", 1),
        ("auth", "failed", "ipv4:10.0.0.7:1000", 299),
    ]
    assert recs[0].credential == "k1000"


async def test_too_many_kinds_in_a_window_share_one_record(store: SqliteStore) -> None:
    log = AuditLog(store, window=3600, max_keys=10)
    for i in range(1000):  # a new subject each time: the kinds an attacker controls
        log.denied("publish", f"secret.{i}", denial(), principal=ACME)
    await log.stop()
    recs = await all_records(store)
    assert len(recs) == 11
    overflow = recs[-1]
    assert (overflow.target, overflow.org, overflow.count) == ("*", "*", 990)
    assert sum(r.count for r in recs) == 1000


async def test_a_full_queue_drops_and_counts_instead_of_blocking(store: SqliteStore) -> None:
    log = AuditLog(store, max_queue=50)
    for i in range(120):  # synchronous: the writer cannot run in between
        log.record("policy.put", target=f"v{i}")
    assert log.queued == 50 and log.dropped == 70
    await log.flush()
    recs = await all_records(store)
    assert [r.target for r in recs[:50]] == [f"v{i}" for i in range(50)]
    dropped = recs[50]
    assert (dropped.action, dropped.outcome, dropped.count) == ("audit.dropped", "failed", 70)


async def test_the_writer_task_writes_without_being_asked(store: SqliteStore) -> None:
    log = AuditLog(store)
    await log.start()
    try:
        log.record("policy.put", target="v1")

        async def written() -> bool:
            return len(await all_records(store)) == 1

        await eventually(written, timeout=10)
    finally:
        await log.stop()


async def test_retention_removes_old_records_at_start(store: SqliteStore) -> None:
    now = int(time.time() * 1000)
    await store.append_audit([AuditRecord(now - 100 * 86_400_000, "old"), AuditRecord(now, "new")])
    log = AuditLog(store, retention=90 * 86_400)
    await log.start()
    try:

        async def trimmed() -> bool:
            return [r.action for r in await all_records(store)] == ["new"]

        await eventually(trimmed, timeout=10)
    finally:
        await log.stop()


def test_who_reads_which_orgs_records() -> None:
    perms = Permissions(admin_org="default")
    broker_admin = Principal("default", "ops", frozenset({"admin"}))
    assert audit_scope(broker_admin, "", perms) is None  # every org, and the broker's own
    assert audit_scope(broker_admin, "globex", perms) == "globex"
    for org_admin in (ACME_ADMIN, Principal("acme", "lead", frozenset({"org-admin"}))):
        assert audit_scope(org_admin, "", perms) == "acme"  # its own org, asked or not
        assert audit_scope(org_admin, "acme", perms) == "acme"
        with pytest.raises(PermissionDenied, match="in org 'globex'"):
            audit_scope(org_admin, "globex", perms)
    with pytest.raises(PermissionDenied, match="read the audit log"):
        audit_scope(ACME, "", perms)


def test_audit_settings_are_durations_and_bounded() -> None:
    cfg = load_config({"audit_retention": "30d", "audit_window": "500ms"}, env={})
    assert (cfg.audit_retention, cfg.audit_window) == (30 * 86_400, 0.5)
    assert Config().audit_retention == 90 * 86_400
    with pytest.raises(ConfigError, match="audit_window"):
        load_config({"audit_window": "0s"}, env={})


def _events(n: int, prefix: str) -> list[cloudevent_pb2.CloudEvent]:
    return [
        cloudevent_pb2.CloudEvent(id=f"{prefix}-{i}", source="t", spec_version="1.0", type="t")
        for i in range(n)
    ]


async def test_a_flood_of_denied_publishes_stays_off_the_admitted_path(tmp_path: Path) -> None:
    gate = PolicyGate()
    cfg = Config(data_dir=str(tmp_path), fsync="never", audit_window=3600)
    broker = Broker(cfg, SqliteStore(tmp_path, fsync="never"), gate)
    broker.audit.max_queue = 100
    await broker.start()
    try:
        gate.swap(PolicyManager(gate, broker.store).compile({"secrets.policy": SECRETS}))
        attacker = Principal("evil", "flood", frozenset())
        denied = 0
        stored = 0

        async def flood(k: int) -> None:
            nonlocal denied
            for n in range(300):
                # A new subject every time: the worst case for aggregation.
                subject = f"secret.s{k}x{n}"
                out = await broker.publish(attacker, subject, _events(20, f"f{k}-{n}"))
                assert len(out.errors) == 20
                denied += 20
                await asyncio.sleep(0)  # a refused batch never waits: let the others run

        async def admitted() -> None:
            nonlocal stored
            for k in range(100):
                out = await broker.publish(ACME, "orders.created", _events(10, f"ok{k}"))
                assert not out.errors
                stored += len(out.ids)
                await asyncio.sleep(0)

        await asyncio.gather(admitted(), *(flood(k) for k in range(4)))
        assert stored == 1000 and denied == 4 * 300 * 20
        # The queue never held more than its bound, and every denial is accounted for:
        # recorded, aggregated (counted) or dropped (counted).
        assert broker.audit.high_water <= 100
    finally:
        await broker.stop()
    s = SqliteStore(tmp_path, fsync="never")
    await s.open()
    try:
        recs = await s.query_audit(AuditQuery(limit=100_000))
    finally:
        await s.close()
    flood_recs = [r for r in recs if r.action == "publish" and r.outcome == "denied"]
    dropped = sum(r.count for r in recs if r.action == "audit.dropped")
    assert all(r.org in ("evil", "*") for r in flood_recs)
    assert sum(r.count for r in flood_recs) + dropped == denied
    assert len(recs) <= 100 + 1000 + 10  # bounded by the queue and the kinds, not the flood
