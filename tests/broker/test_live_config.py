"""The config store and the registry applied live: two nodes on one store, a change made on
one is in force on the other (through the notice, or the 1 s poll when no notice comes), and
each setting reaches the part it changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.auth import DEV_PRINCIPAL, Principal
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config
from lockgate.broker.configstore import ConfigChange
from lockgate.broker.errors import FailedPrecondition, InvalidArgument, InvalidSubject, NotFound
from lockgate.broker.leases import LocalLeases
from lockgate.broker.livesettings import LiveSettings, check_settings
from lockgate.broker.node import Broker
from lockgate.broker.store import BackboneRecord, RetentionRule
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from tests.support import eventually


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/n", spec_version="1.0", type="t")


def node(path: Path, backbone: LocalBackbone, leases: LocalLeases, worker: int) -> Broker:
    config = Config(data_dir=str(path), worker_id=worker)
    return Broker(config, SqliteStore(path, fsync="never"), backbone=backbone, leases=leases)


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Broker, Broker]]:
    """Two nodes on one store (the same SQLite file) and one backbone."""
    backbone, leases = LocalBackbone(), LocalLeases()
    a = node(tmp_path, backbone, leases, 1)
    b = node(tmp_path, backbone, leases, 2)
    await a.start()
    await b.start()
    yield a, b
    await b.stop()
    await a.stop()


async def test_a_rate_limit_set_on_one_node_limits_publishes_on_the_other(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    out = await b.publish(DEV_PRINCIPAL, "orders.eu", [event(str(i)) for i in range(5)])
    assert out.errors == []
    v = await a.settings.set(
        [
            ConfigChange("orders.>", "publish_rate", "0.01"),
            ConfigChange("orders.>", "publish_burst", "2"),
        ]
    )
    await eventually(lambda: b.live.version == v.version, what="node b runs the new version")
    out = await b.publish(DEV_PRINCIPAL, "orders.eu", [event(f"x{i}") for i in range(3)])
    assert [i for i, _ in out.errors] == [2]
    err = out.errors[0][1]
    assert err.reason == "RATE_LIMITED" and err.metadata["rule"] == "config:orders.>"
    # Other subjects and other orgs have their own buckets.
    assert (await b.publish(DEV_PRINCIPAL, "billing.eu", [event("b1")])).errors == []
    globex = Principal("globex", "g1", frozenset())
    out = await b.publish(globex, "orders.eu", [event("g1"), event("g2"), event("g3")])
    assert [i for i, _ in out.errors] == [2]  # its own burst of 2, untouched by default's
    # Rolled back to before the limit: publishes flow again on both nodes.
    back = await b.settings.rollback()
    await eventually(lambda: a.live.version == back.version)
    assert not a.live.has_limits and not a.policy.active


async def test_without_a_notice_the_poll_applies_a_change_within_a_second(
    tmp_path: Path,
) -> None:
    leases = LocalLeases()
    a = node(tmp_path, LocalBackbone(), leases, 1)  # two backbones: no notice crosses
    b = node(tmp_path, LocalBackbone(), leases, 2)
    await a.start()
    await b.start()
    try:
        v = await a.settings.set([ConfigChange("", "subscriber_write_deadline", "7s")])
        await eventually(lambda: b.live.version == v.version, timeout=10)
        assert b.live.subscriber_write_deadline("any.thing") == 7.0
        await a.registry.create(BackboneRecord("eu-1", "nats://127.0.0.1:4222", ("acme",)))
        found = await eventually(lambda: b.registry.backbone_for("acme"))
        assert found.id == "eu-1" and b.registry.backbone_for("globex") is None
    finally:
        await b.stop()
        await a.stop()


async def test_each_setting_reaches_its_part(pair: tuple[Broker, Broker]) -> None:
    a, _ = pair
    await a.settings.set(
        [
            ConfigChange("", "ack_wait", "45s"),
            ConfigChange("jobs.>", "ack_wait", "2m"),
            ConfigChange("jobs.>", "max_deliveries", "9"),
            ConfigChange("jobs.>", "backoff", "1"),
            ConfigChange("jobs.>", "subscriber_max_bytes", "3145728"),
            ConfigChange("jobs.>", "subscriber_write_deadline", "2s"),
            ConfigChange("jobs.>", "retention_max_age", "1h"),
            ConfigChange("", "retention_max_events", "1000"),
        ]
    )
    c = await a.create_durable(DEV_PRINCIPAL, "worker", "jobs.eu.*")
    assert (c.rec.ack_wait_ms, c.rec.max_deliveries) == (120_000, 9)
    assert c.backoff() == 1
    other = await a.create_durable(DEV_PRINCIPAL, "other", "mail.>")
    assert (other.rec.ack_wait_ms, other.rec.max_deliveries) == (45_000, 5)  # global, node
    assert other.backoff() == 32
    sub = await a.subscribe_ephemeral(DEV_PRINCIPAL, "jobs.eu", "")
    assert (sub._max_bytes, sub._deadline) == (3 << 20, 2.0)  # what it was given
    assert a.live.subscriber_max_bytes("jobs.eu") == 3 << 20
    assert a.live.subscriber_max_bytes("mail.x") == a.config.subscriber_max_bytes
    assert set(a.live.retention_rules()) == {
        RetentionRule("jobs.>", 3_600_000, 0),
        RetentionRule(">", 0, 1000),
        RetentionRule("$dlq.>", 0, 1000),
    }
    # backoff follows a later change live, for a durable that exists already
    await a.settings.set([ConfigChange("jobs.>", "backoff", "4")])
    assert c.backoff() == 4


@pytest.mark.parametrize(
    ("doc", "setting", "words"),
    [
        ({"": {"ack_wait": "forever"}}, "ack_wait", "is not a duration"),
        ({"": {"ack_wait": "13h"}}, "ack_wait", "out of range"),
        ({"a.>": {"max_deliveries": "0"}}, "max_deliveries", "out of range"),
        ({"a.>": {"publish_rate": "-1"}}, "publish_rate", "out of range"),
        ({"a.>": {"publish_rate": "nan"}}, "publish_rate", "not a finite number"),
        ({"a.>": {"subscriber_max_bytes": "lots"}}, "subscriber_max_bytes", "is not an integer"),
        ({"": {"colour": "red"}}, "colour", "not a setting"),
    ],
)
def test_a_bad_value_is_refused_with_the_settings_name_and_why(
    doc: dict[str, dict[str, str]], setting: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_settings(doc)
    assert exc.value.reason == "INVALID_SETTING"
    assert exc.value.metadata["setting"] == setting
    assert setting in exc.value.message and words in exc.value.message


def test_a_bad_pattern_is_refused() -> None:
    with pytest.raises(InvalidSubject):
        check_settings({"a..b": {"backoff": "2"}})


async def test_refusals_change_nothing_and_are_audited(pair: tuple[Broker, Broker]) -> None:
    a, _ = pair
    first = await a.settings.set([ConfigChange("", "backoff", "8")])
    with pytest.raises(InvalidArgument):
        await a.settings.set([ConfigChange("", "backoff", "2"), ConfigChange("", "ack_wait", "0s")])
    with pytest.raises(FailedPrecondition):
        await a.settings.set([ConfigChange("", "backoff", "2")], expected_version=99)
    with pytest.raises(NotFound) as nf:
        await a.settings.rollback(42)
    assert nf.value.reason == "UNKNOWN_VERSION"
    latest = await a.settings.get()
    assert latest is not None and latest.version == first.version
    assert a.live.backoff("x") == 8
    records = await eventually(
        lambda: _audit(a, "config"), what="config changes and refusals in the audit log"
    )
    assert {(r.action, r.outcome) for r in records} >= {
        ("config.set", "ok"),
        ("config.set", "failed"),
        ("config.rollback", "failed"),
    }
    refused = [r for r in records if r.outcome == "failed" and r.detail.get("setting")]
    assert refused[0].detail["setting"] == "ack_wait"


async def _audit(b: Broker, action: str) -> list[object] | None:
    from lockgate.broker.store import AuditQuery

    found = await b.store.query_audit(AuditQuery(action=action, limit=100))
    return found if len(found) >= 4 else None  # type: ignore[return-value]


def test_the_most_specific_pattern_wins() -> None:
    live = LiveSettings(Config())
    live.swap(
        check_settings(
            {
                "": {"max_deliveries": "2"},
                "a.>": {"max_deliveries": "3"},
                "a.b.>": {"max_deliveries": "4"},
                "a.*.c": {"max_deliveries": "6"},
            }
        ),
        1,
    )
    # a.b.> and a.*.c both cover a.b.c with two literal tokens: the one without '>' wins
    assert live.max_deliveries("a.b.c") == 6
    assert live.max_deliveries("a.b.d") == 4
    assert live.max_deliveries("a.x.c") == 6
    assert live.max_deliveries("a.x") == 3
    assert live.max_deliveries("a.>") == 3
    assert live.max_deliveries("z") == 2
    assert live.buckets("acme", "a.b.c") == []  # no rate set


async def test_changes_made_at_once_all_land_and_the_newest_runs(
    pair: tuple[Broker, Broker],
) -> None:
    a, b = pair
    names = ("ack_wait", "max_deliveries", "backoff", "retention_max_events")
    values = ("20s", "7", "3", "50")
    made = await asyncio.gather(
        *(
            node.settings.set([ConfigChange("", n, v)])
            for node, n, v in zip((a, b, a, b), names, values, strict=True)
        )
    )
    assert sorted(v.version for v in made) == [1, 2, 3, 4]  # one number each, none lost
    newest = await a.settings.get()
    assert newest is not None and newest.settings[""] == dict(zip(names, values, strict=True))
    await eventually(lambda: a.live.version == b.live.version == 4)
    assert a.live.backoff("x") == 3 and b.live.max_deliveries("x") == 7
