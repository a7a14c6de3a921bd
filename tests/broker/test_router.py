"""The router on its own: matching, the per-subject cache, queue groups sharing batches."""

from __future__ import annotations

from lockgate.broker import wire
from lockgate.broker.auth import Principal
from lockgate.broker.delivery import EphemeralSubscription
from lockgate.broker.router import Router


def _sub(pattern: str, queue: str = "", org: str = "o") -> EphemeralSubscription:
    return EphemeralSubscription(org, pattern, queue, 1 << 20)


def _batch(subject: str, first: int, n: int) -> tuple[bytes, list[int]]:
    ids = list(range(first, first + n))
    sf = wire.subject_field(subject)
    return b"".join(wire.delivery_frame(i, sf, b"\x0a\x01x") for i in ids), ids


async def _received(sub: EphemeralSubscription) -> list[int]:
    """What the subscription's stream would write now."""
    out: list[int] = []
    while sub.outbox.buffered and not sub.outbox.closed:
        body = await sub.outbox.take()
        assert body is not None
        out += [i for i, _ in wire.split_frames(body)]
    return out


async def test_patterns_orgs_and_the_cache() -> None:
    r = Router()
    star, deep, other_org = _sub("a.*"), _sub("a.>"), _sub("a.>", org="p")
    for s in (star, deep, other_org):
        r.add(s)
    body, ids = _batch("a.b.c", 1, 2)
    assert r.route("o", "a.b.c", body, 2, ids) == 1
    assert (
        await _received(deep) == ids
        and await _received(star) == []
        and await _received(other_org) == []
    )
    assert r.has_targets("o", "a.b") and not r.has_targets("o", "b")
    r.remove(deep)  # the cached match must not keep a removed subscription
    assert r.route("o", "a.b.c", body, 2, ids) == 0
    assert not r.has_targets("o", "a.b.c")


async def test_a_queue_group_spreads_a_batch_in_runs() -> None:
    r = Router()
    members = [_sub("t.>", "g") for _ in range(3)]
    plain = _sub("t.>")
    for s in (*members, plain):
        r.add(s)
    body, ids = _batch("t.x", 100, 10)
    r.route("o", "t.x", body, 10, ids)
    shares = [await _received(m) for m in members]
    assert sorted(i for share in shares for i in share) == ids  # each to exactly one
    assert sorted(len(share) for share in shares) == [2, 4, 4]  # runs of ceil(10/3)
    assert all(share == sorted(share) for share in shares)  # consecutive, in order
    assert await _received(plain) == ids  # beside the group, a plain subscriber gets all


async def test_single_events_go_round_robin() -> None:
    r = Router()
    members = [_sub("t.>", "g") for _ in range(2)]
    for m in members:
        r.add(m)
    for n in range(6):
        body, ids = _batch("t.x", n + 1, 1)
        r.route("o", "t.x", body, 1, ids)
    assert sorted([len(await _received(m)) for m in members]) == [3, 3]


async def test_a_full_member_passes_its_share_on() -> None:
    r = Router()
    full = EphemeralSubscription("o", "t.>", "g", 1 << 20, max_bytes=10)
    roomy = _sub("t.>", "g")
    r.add(full)
    r.add(roomy)
    body, ids = _batch("t.x", 1, 4)
    r.route("o", "t.x", body, 4, ids)
    # The full member was cut off as a slow consumer; nothing was lost on the way.
    assert full.outbox.closed
    assert await _received(roomy) == ids


async def test_wildcard_targets_get_only_subjects_their_reader_may_read() -> None:
    """Read decisions per delivered subject, taken once per (org, subject) match and cached
    with it; a literal pattern's subscribe decision was on that subject, so it is not asked."""
    asked: list[tuple[str, str]] = []
    denied = {"secret.payroll"}

    def may_read(p: Principal, subject: str) -> bool:
        asked.append((p.agent, subject))
        return subject not in denied

    r = Router(may_read)
    who = Principal("o", "bot", frozenset())
    wide = EphemeralSubscription("o", ">", "", 1 << 20, reader=who)
    exact = EphemeralSubscription("o", "secret.payroll", "", 1 << 20, reader=who)
    r.add(wide)
    r.add(exact)
    for n in range(3):  # three batches, one decision
        body, ids = _batch("secret.payroll", 10 + n, 1)
        r.route("o", "secret.payroll", body, 1, ids)
    assert await _received(wide) == [] and await _received(exact) == [10, 11, 12]
    assert asked == [("bot", "secret.payroll")]
    denied.clear()
    r.forget_matches()  # a new policy set: decisions are taken again
    body, ids = _batch("secret.payroll", 20, 1)
    r.route("o", "secret.payroll", body, 1, ids)
    assert await _received(wide) == [20]
