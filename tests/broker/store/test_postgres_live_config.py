"""The config store and the backbone registry on PostgreSQL, as cluster nodes share them: two
nodes with their own logs and one PostgreSQL database, and no backbone between them (no
notice crosses), follow each other's changes through the 1 s poll."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL
from lockgate.broker.config import Config
from lockgate.broker.configstore import ConfigChange
from lockgate.broker.node import Broker
from lockgate.broker.store import BackboneRecord
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from tests.broker.store.test_postgres_in_broker import _Hybrid
from tests.support import eventually

pytestmark = pytest.mark.postgres


def _node(where: Path, dsn: str, worker: int) -> Broker:
    where.mkdir()
    cfg = Config(data_dir=str(where), fsync="never", worker_id=worker)
    store = _Hybrid(SqliteStore(where, fsync="never"), PgStore(dsn, max_size=4))
    return Broker(cfg, store)  # type: ignore[arg-type]


@pytest.fixture
async def pair(tmp_path: Path, pg_fresh_dsn: str) -> AsyncIterator[tuple[Broker, Broker]]:
    a, b = _node(tmp_path / "a", pg_fresh_dsn, 1), _node(tmp_path / "b", pg_fresh_dsn, 2)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def test_a_change_on_one_node_is_in_force_on_the_other(pair: tuple[Broker, Broker]) -> None:
    a, b = pair
    v = await a.settings.set(
        [
            ConfigChange("pg.>", "publish_rate", "0.01"),
            ConfigChange("pg.>", "publish_burst", "1"),
        ]
    )
    await eventually(lambda: b.live.version == v.version, what="node b polled the new version")
    events = [
        cloudevent_pb2.CloudEvent(id=f"e{i}", source="t", spec_version="1.0", type="t")
        for i in range(2)
    ]
    out = await b.publish(DEV_PRINCIPAL, "pg.x", events)
    assert [(i, e.reason) for i, e in out.errors] == [(1, "RATE_LIMITED")]
    await b.registry.create(BackboneRecord("eu-1", "nats://127.0.0.1:4222", ("acme",)))
    found = await eventually(lambda: a.registry.backbone_for("acme"), what="node a sees it")
    assert found.endpoint == "nats://127.0.0.1:4222"
    back = await b.settings.rollback()
    await eventually(lambda: a.live.version == back.version and not a.live.has_limits)
