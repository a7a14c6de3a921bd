"""Per-org quotas in process: counting, refusing at the limit with QUOTA_EXCEEDED, and
releasing on every way out (unsubscribe, slow consumer, detach, delete), so that what is
released can be taken again. The gRPC side is in test_e2e_quotas."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from lockgate.broker.auth import Principal
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import QuotaExceeded
from lockgate.broker.node import Broker
from lockgate.broker.quotas import Connections, OrgQuota
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2

EVIL = Principal("evil", "e1", frozenset())
ACME = Principal("acme", "a1", frozenset())


def _refused(exc: pytest.ExceptionInfo[QuotaExceeded], quota: str, limit: int) -> None:
    err = exc.value
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")
    assert err.metadata == {"quota": quota, "limit": str(limit)}
    assert quota in err.message and err.hint


def test_org_quota_counts_per_org_and_frees_on_release() -> None:
    q = OrgQuota("max_durables_per_org", 2, "durable subscriptions")
    q.acquire("evil")
    q.acquire("evil")
    with pytest.raises(QuotaExceeded) as exc:
        q.acquire("evil")
    _refused(exc, "max_durables_per_org", 2)
    assert "org 'evil' holds 2 durable subscriptions" in exc.value.message
    q.acquire("acme")  # another org has its own count
    q.release("evil")
    q.acquire("evil")
    assert (q.count("evil"), q.count("acme")) == (2, 1)


def test_org_quota_of_zero_is_off() -> None:
    q = OrgQuota("max_durables_per_org", 0, "durable subscriptions")
    for _ in range(10_000):
        q.acquire("evil")
    assert q.count("evil") == 10_000


def test_streams_per_connection() -> None:
    conns = Connections(max_connections_per_org=0, max_streams_per_connection=3)
    peer = "ipv4:127.0.0.1:50000"
    releases = [conns.open("evil", peer) for _ in range(3)]
    with pytest.raises(QuotaExceeded) as exc:
        conns.open("evil", peer)
    _refused(exc, "max_streams_per_connection", 3)
    conns.open("evil", "ipv4:127.0.0.1:50001")  # another connection
    releases[0]()
    releases[0]()  # a second release changes nothing
    assert conns.streams(peer) == 2
    conns.open("acme", peer)  # the connection's count, whatever the org
    with pytest.raises(QuotaExceeded):
        conns.open("evil", peer)


def test_connections_per_org() -> None:
    conns = Connections(max_connections_per_org=2, max_streams_per_connection=0)
    a = conns.open("evil", "ipv6:[::1]:1")
    conns.open("evil", "ipv6:[::1]:1")  # more streams on a counted connection are fine
    conns.open("evil", "ipv4:127.0.0.1:2")
    with pytest.raises(QuotaExceeded) as exc:
        conns.open("evil", "ipv4:127.0.0.1:3")
    _refused(exc, "max_connections_per_org", 2)
    conns.open("acme", "ipv4:127.0.0.1:3")  # another org
    a()
    assert conns.connections("evil") == 2  # its second stream still holds the connection
    with pytest.raises(QuotaExceeded):
        conns.open("evil", "ipv4:127.0.0.1:3")


def test_unix_socket_peers_have_no_stream_limit() -> None:
    # Every connection over a unix socket has the same peer: they cannot be told apart.
    conns = Connections(max_connections_per_org=0, max_streams_per_connection=2)
    for _ in range(5):
        conns.open("evil", "unix:/tmp/lockgate.sock")


@pytest.mark.parametrize("name", ["max_durables_per_org", "max_streams_per_connection"])
def test_negative_quota_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(env={f"LOCKGATE_{name.upper()}": "-1"})


def test_quota_defaults_are_on() -> None:
    cfg = load_config(env={})
    assert (
        cfg.max_durables_per_org,
        cfg.max_subscriptions_per_org,
        cfg.max_connections_per_org,
        cfg.max_streams_per_connection,
    ) == (1000, 10_000, 1000, 100)


async def _broker(tmp_path: Path, **quotas: int) -> Broker:
    cfg = Config(data_dir=str(tmp_path), fsync="never", **quotas)  # type: ignore[arg-type]
    broker = Broker(cfg, SqliteStore(tmp_path, fsync="never"))
    await broker.start()
    return broker


async def test_durables_per_org_in_process(tmp_path: Path) -> None:
    broker = await _broker(tmp_path, max_durables_per_org=3)
    try:
        for n in range(3):
            await broker.create_durable(EVIL, f"d{n}", "a.>")
        await broker.create_durable(EVIL, "d0", "a.>")  # an existing one is no new one
        with pytest.raises(QuotaExceeded) as exc:
            await broker.fetch(EVIL, "d3", 1, 0, pattern="a.>")
        _refused(exc, "max_durables_per_org", 3)
        with pytest.raises(QuotaExceeded):
            await broker.subscribe_durable(EVIL, "d3", "a.>", DurableOptions())
        assert ("evil", "d3") not in broker.consumers
        await broker.create_durable(ACME, "d3", "a.>")  # another org is untouched
        await broker.delete_durable("evil", "d1")
        await broker.create_durable(EVIL, "d3", "a.>")  # deleting made room
    finally:
        await broker.stop()


async def test_durables_count_after_a_restart(tmp_path: Path) -> None:
    broker = await _broker(tmp_path, max_durables_per_org=2)
    await broker.create_durable(EVIL, "d0", "a.>")
    await broker.create_durable(EVIL, "d1", "a.>")
    await broker.stop()
    broker = await _broker(tmp_path, max_durables_per_org=2)
    try:
        with pytest.raises(QuotaExceeded):
            await broker.create_durable(EVIL, "d2", "a.>")
    finally:
        await broker.stop()


async def test_subscriptions_per_org_in_process(tmp_path: Path) -> None:
    broker = await _broker(tmp_path, max_subscriptions_per_org=3, subscriber_max_bytes=60)
    try:
        one = await broker.subscribe_ephemeral(EVIL, "a.>", "")
        two = await broker.subscribe_ephemeral(EVIL, "b.>", "")
        session = await broker.subscribe_durable(EVIL, "d", "a.>")
        with pytest.raises(QuotaExceeded) as exc:
            await broker.subscribe_ephemeral(EVIL, "c.>", "")
        _refused(exc, "max_subscriptions_per_org", 3)
        await broker.subscribe_ephemeral(ACME, "c.>", "")  # another org
        # Fetch polls are not live subscriptions.
        assert await broker.fetch(EVIL, "d", 1, 0) == b""
        broker.unsubscribe(one)
        broker.unsubscribe(one)  # twice: released once
        three = await broker.subscribe_ephemeral(EVIL, "c.>", "")
        session.consumer.detach(session)
        session.consumer.detach(session)
        await broker.subscribe_durable(EVIL, "d", "a.>")
        # A slow consumer cut off releases its place at once, before its stream ends.
        ev = cloudevent_pb2.CloudEvent(id="x", source="t", spec_version="1.0", type="t")
        for n in range(3):
            ev.id = f"x{n}"
            await broker.publish(EVIL, "b.x", [ev])
        assert two.outbox.closed and two.outbox.error is not None
        four = await broker.subscribe_ephemeral(EVIL, "d.>", "")
        broker.unsubscribe(two)  # the stream's own end, later: nothing more to release
        assert broker.ephemerals.quota.count("evil") == 3
        for sub in (three, four):
            broker.unsubscribe(sub)
        assert broker.ephemerals.quota.count("evil") == 1  # the durable stream
    finally:
        await broker.stop()
