"""The dashboard's bounded memories: subject rates in time buckets, recent denials with
their rule, the nodes heard from; and the broker feeding them per batch."""

from __future__ import annotations

from pathlib import Path

from lockgate.broker.activity import OTHER_SUBJECTS, RecentDenials, SubjectRates
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.policies import PolicyManager
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_count_per_bucket_oldest_first() -> None:
    clock = Clock()
    rates = SubjectRates(bucket_seconds=5, buckets=4, clock=clock)
    rates.add("acme", "a", 10)
    clock.now += 5
    rates.add("acme", "a", 3)
    rates.add("acme", "b", 1)
    snap = rates.snapshot()
    assert [(r.org, r.subject, r.counts) for r in snap] == [
        ("acme", "a", (0, 0, 10, 3)),
        ("acme", "b", (0, 0, 0, 1)),
    ]
    assert snap[0].total == 13


def test_rates_forget_what_left_the_window() -> None:
    clock = Clock()
    rates = SubjectRates(bucket_seconds=5, buckets=4, clock=clock)
    rates.add("acme", "a", 10)
    clock.now += 15
    assert rates.snapshot()[0].counts == (10, 0, 0, 0)
    clock.now += 5
    assert rates.snapshot() == []
    clock.now += 1000  # a gap longer than the window zeroes every bucket once
    rates.add("acme", "a", 2)
    assert rates.snapshot()[0].counts == (0, 0, 0, 2)


def test_subjects_past_the_bound_count_as_one_row() -> None:
    clock = Clock()
    rates = SubjectRates(bucket_seconds=5, buckets=4, max_subjects=3, clock=clock)
    for i in range(10):
        rates.add("acme", f"s{i}", 1)
    rows = {(r.org, r.subject): r.total for r in rates.snapshot()}
    assert len(rows) == 4
    assert rows[("", OTHER_SUBJECTS)] == 7
    # Once the first ones are idle past the window, new subjects get their own rows again.
    clock.now += 100
    rates.add("acme", "fresh", 5)
    assert [(r.subject, r.total) for r in rates.snapshot()] == [("fresh", 5)]


def test_one_org_flooding_subjects_leaves_room_for_the_others() -> None:
    """An org past its share counts its new subjects in its own (other subjects) row, so a
    flood from one tenant never pushes another tenant's subjects out of the view."""
    clock = Clock()
    rates = SubjectRates(bucket_seconds=5, buckets=4, max_subjects=10, org_share=3, clock=clock)
    for i in range(100):
        rates.add("acme", f"s{i}", 1)
    rates.add("globex", "orders", 4)
    rates.add("acme", "s0", 1)  # a subject with a row keeps it
    rows = {(r.org, r.subject): r.total for r in rates.snapshot()}
    assert rows == {
        ("acme", "s0"): 2,
        ("acme", "s1"): 1,
        ("acme", "s2"): 1,
        ("acme", OTHER_SUBJECTS): 97,
        ("globex", "orders"): 4,
    }


def _deny(ring: RecentDenials, org: str, subject: str) -> None:
    ring.add(
        org,
        "bot",
        "publish",
        subject,
        1,
        reason="POLICY_DENIED",
        rule="p:1",
        effect="deny",
        message="no",
        policy_version="v1",
    )


def test_one_org_flooding_denials_does_not_evict_another_orgs() -> None:
    clock = Clock()
    ring = RecentDenials(size=3, max_orgs=2, clock=clock)
    _deny(ring, "globex", "g.0")
    for i in range(50):
        clock.now += 1
        _deny(ring, "acme", f"a.{i}")
    assert [d.subject for d in ring.latest(10)] == ["a.49", "a.48", "a.47", "g.0"]
    _deny(ring, "initech", "i.0")  # a third org: the org denied longest ago makes room
    assert [d.subject for d in ring.latest(2)] == ["i.0", "a.49"]
    assert {d.org for d in ring.latest(10)} == {"acme", "initech"}


def test_recent_denials_are_bounded_newest_first() -> None:
    ring = RecentDenials(size=3, clock=lambda: 2.0)
    for i in range(5):
        ring.add(
            "acme",
            "bot",
            "publish",
            f"secret.{i}",
            2,
            reason="POLICY_DENIED",
            rule="secrets.policy:2",
            effect="deny",
            message="x" * 1000,
            policy_version="v1",
        )
    latest = ring.latest(10)
    assert [d.subject for d in latest] == ["secret.4", "secret.3", "secret.2"]
    assert latest[0].time_ms == 2000 and len(latest[0].message) == 500
    assert [d.subject for d in ring.latest(1)] == ["secret.4"]


SECRETS = """\
policy secrets on "secret.>" {
  closed: deny publish because "secrets are closed"
}
"""


def _events(n: int) -> list[cloudevent_pb2.CloudEvent]:
    return [
        cloudevent_pb2.CloudEvent(id=f"e{i}", source="t", spec_version="1.0", type="t")
        for i in range(n)
    ]


async def test_the_broker_feeds_rates_and_denials_once_per_batch(tmp_path: Path) -> None:
    gate = PolicyGate()
    broker = Broker(Config(data_dir=str(tmp_path), fsync="never"), SqliteStore(tmp_path), gate)
    await broker.start()
    try:
        gate.swap(PolicyManager(gate, broker.store).compile({"secrets.policy": SECRETS}))
        who = Principal("acme", "bot", frozenset())
        out = await broker.publish(who, "orders.new", _events(7))
        assert not out.errors
        denied = await broker.publish(who, "secret.plans", _events(3))
        assert len(denied.errors) == 3
        rates = {(r.org, r.subject): r.total for r in broker.pipeline.rates.snapshot()}
        assert rates == {("acme", "orders.new"): 7}
        (d,) = gate.denials.latest()
        assert (d.org, d.agent, d.subject, d.count) == ("acme", "bot", "secret.plans", 3)
        assert (d.rule, d.effect, d.reason) == ("secrets.policy:2", "deny", "POLICY_DENIED")
        assert d.policy_version == gate.version
        # A refused subscription is one too (the set covers secret.> and allows no reading).
        assert gate.check_subscribe(who, "secret.>") is not None
        sub = gate.denials.latest(1)[0]
        assert (sub.action, sub.subject, sub.count, sub.reason) == (
            "subscribe",
            "secret.>",
            1,
            "POLICY_DENIED",
        )
    finally:
        await broker.stop()
