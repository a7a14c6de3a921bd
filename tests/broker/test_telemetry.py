"""The broker's instruments: the decisions counter's ``rule`` label stays bounded."""

from __future__ import annotations

from collections.abc import Mapping

from lockgate.broker.telemetry import RULE_LABELS, RULES_PER_ORG, Telemetry


class _Counter:
    def __init__(self) -> None:
        self.added: list[tuple[int, dict[str, str]]] = []

    def add(self, n: int, labels: Mapping[str, str]) -> None:
        self.added.append((n, dict(labels)))


def test_decisions_carry_the_rule_and_overflow_past_the_cap() -> None:
    t = Telemetry()
    counter = _Counter()
    t.decisions = counter  # type: ignore[assignment]
    t.count_decisions({("allow", "a.policy:2"): 5, ("default", ""): 1})
    assert counter.added == [
        (5, {"effect": "allow", "rule": "a.policy:2"}),
        (1, {"effect": "default", "rule": "none"}),
    ]
    for i in range(RULE_LABELS + 10):
        t.count_decisions({("deny", f"org{i % 20}/p.policy:{i}"): 1})
    rules = {labels["rule"] for _, labels in counter.added}
    assert len(rules - {"none", "other"}) == RULE_LABELS
    assert counter.added[-1] == (1, {"effect": "deny", "rule": "other"})
    t.count_decisions({("allow", "a.policy:2"): 1})  # a rule seen before keeps its label
    assert counter.added[-1] == (1, {"effect": "allow", "rule": "a.policy:2"})


def test_one_orgs_rules_never_push_anothers_into_other() -> None:
    """An org's policy edits mint new ``org/file:line`` rules; past its share they read
    ``other``, so the labels left for the other orgs and the operator stay theirs."""
    t = Telemetry()
    counter = _Counter()
    t.decisions = counter  # type: ignore[assignment]
    for i in range(RULE_LABELS * 2):
        t.count_decisions({("deny", f"acme/p.policy:{i}"): 1})
    acme = {labels["rule"] for _, labels in counter.added}
    assert len(acme - {"other"}) == RULES_PER_ORG and "other" in acme
    t.count_decisions({("deny", "globex/q.policy:3"): 1, ("allow", "ops.policy:9"): 1})
    assert [labels["rule"] for _, labels in counter.added[-2:]] == [
        "globex/q.policy:3",
        "ops.policy:9",
    ]
