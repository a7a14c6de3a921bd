"""diff_decisions: what changes when a policy set is replaced."""

from __future__ import annotations

from lockgate.policy import PolicySet, Principal, Request
from lockgate.policy.replay import diff_decisions
from tests.policy.policy_helpers import compile_policies

P = Principal("acme", "a", frozenset({"billing"}))


def test_diff_counts_changes() -> None:
    old = compile_policies({"b.policy": 'policy b on "b.>" {\n  allow publish\n}'})
    new = compile_policies(
        {
            "b.policy": 'policy b on "b.>" {\n  allow publish\n'
            "  deny publish when event.data.n > 5\n}"
        }
    )
    reqs = [Request("publish", "b.x", P, {}, {"n": n}) for n in range(10)]
    rep = diff_decisions(old, new, reqs)
    assert (rep.total, rep.changed, rep.newly_denied, rep.newly_allowed) == (10, 4, 4, 0)
    assert [c.index for c in rep.changes] == [6, 7, 8, 9]
    assert (
        rep.summary()
        == "4 of 10 decisions change: 4 newly denied, 0 newly allowed, 0 with other effects"
    )


def test_moved_rule_is_not_a_change() -> None:
    old = compile_policies({"b.policy": 'policy b on "b.>" {\n  allow publish\n}'})
    new = compile_policies({"b.policy": '# moved\npolicy b on "b.>" {\n  allow publish\n}'})
    rep = diff_decisions(old, new, [Request("publish", "b.x", P)])
    assert rep.changed == 0


def test_effects_changes_and_listing_bound() -> None:
    new = compile_policies(
        {"b.policy": 'policy b on "b.>" {\n  allow publish\n  limit publish 1 per second\n}'}
    )
    old = compile_policies({"b.policy": 'policy b on "b.>" {\n  allow publish\n}'})
    rep = diff_decisions(old, new, (Request("publish", "b.x", P) for _ in range(5)), max_listed=2)
    assert (rep.changed, rep.newly_denied, rep.newly_allowed, len(rep.changes)) == (5, 0, 0, 2)
    assert diff_decisions(PolicySet.empty(), old, [Request("publish", "b.x", P)]).changed == 1
