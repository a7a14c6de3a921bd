"""The audit store contract, for every metadata backend."""

from __future__ import annotations

from lockgate.broker.store import AuditQuery, AuditRecord, AuditStore
from tests.broker.contracts.contract_stores import OpenMetadata, metadata, open_metadata

__all__ = ["metadata", "open_metadata"]


def _rec(t: int, action: str, org: str = "acme", **kw: object) -> AuditRecord:
    return AuditRecord(t, action, org=org, **kw)  # type: ignore[arg-type]


async def test_append_and_read_back_in_order(metadata: AuditStore) -> None:
    rec = AuditRecord(
        1000,
        "publish",
        "denied",
        "acme",
        "a1",
        "k1",
        "pay.out",
        "grpc",
        "ipv4:127.0.0.1:5",
        3,
        {"rule": "no-pay", "effect": "deny"},
    )
    await metadata.append_audit([rec, _rec(1001, "policy.put")])
    await metadata.append_audit([_rec(1002, "auth", org="")])
    got = await metadata.query_audit(AuditQuery())
    assert [r.action for r in got] == ["publish", "policy.put", "auth"]
    assert got[0].id < got[1].id < got[2].id
    first = got[0]
    who = (first.org, first.agent, first.credential, first.target)
    assert who == ("acme", "a1", "k1", "pay.out")
    assert (first.outcome, first.surface, first.peer, first.count) == (
        "denied",
        "grpc",
        "ipv4:127.0.0.1:5",
        3,
    )
    assert dict(first.detail) == {"rule": "no-pay", "effect": "deny"}
    assert first.time_ms == 1000


async def test_filters(metadata: AuditStore) -> None:
    await metadata.append_audit(
        [
            _rec(1000, "policy.put", agent="a1"),
            _rec(2000, "policy.rollback", agent="a2", outcome="failed"),
            _rec(3000, "policyx", org="globex"),
            _rec(4000, "publish", org="globex", outcome="denied"),
            _rec(5000, "key.create", org=""),
        ]
    )

    async def actions(**kw: object) -> list[str]:
        return [r.action for r in await metadata.query_audit(AuditQuery(**kw))]  # type: ignore[arg-type]

    assert await actions(action="policy") == ["policy.put", "policy.rollback"]
    assert await actions(action="policy.put") == ["policy.put"]
    assert await actions(action="polic") == []  # a whole dotted name, not a text prefix
    assert await actions(action="policy_put") == []  # LIKE's wildcards are literal
    assert await actions(org="globex") == ["policyx", "publish"]
    assert await actions(org="") == ["key.create"]  # "" is the broker's own org-less records
    assert await actions(agent="a2") == ["policy.rollback"]
    assert await actions(outcome="denied") == ["publish"]
    assert await actions(start_ms=2000, end_ms=4000) == ["policy.rollback", "policyx"]
    assert await actions(org="acme", outcome="failed") == ["policy.rollback"]


async def test_paging_both_ways(metadata: AuditStore) -> None:
    await metadata.append_audit([_rec(1000 + i, f"a{i}") for i in range(7)])
    seen: list[str] = []
    after = 0
    while page := await metadata.query_audit(AuditQuery(after_id=after, limit=3)):
        seen.extend(r.action for r in page)
        after = page[-1].id
    assert seen == [f"a{i}" for i in range(7)]
    newest = await metadata.query_audit(AuditQuery(limit=2, newest_first=True))
    assert [r.action for r in newest] == ["a6", "a5"]
    older = await metadata.query_audit(
        AuditQuery(after_id=newest[-1].id, limit=2, newest_first=True)
    )
    assert [r.action for r in older] == ["a4", "a3"]


async def test_trim_by_age_and_ids_are_not_reused(open_metadata: OpenMetadata) -> None:
    async with open_metadata() as s:
        await s.append_audit([_rec(t, f"a{t}") for t in (1000, 2000, 3000)])
        assert await s.trim_audit(2500) == 2
        assert [r.action for r in await s.query_audit(AuditQuery())] == ["a3000"]
        last = (await s.query_audit(AuditQuery()))[-1].id
        assert await s.trim_audit(10_000) == 1
    async with open_metadata() as s:  # what survives a restart, and a new id above the old
        await s.append_audit([_rec(4000, "later")])
        got = await s.query_audit(AuditQuery())
        assert [r.action for r in got] == ["later"] and got[0].id > last
