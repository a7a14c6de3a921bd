"""Rule labels: a limit's buckets and a duplicate rule's window are keyed by the rule's stable
identity (its label, or its content), so ``policy fmt`` or moving a rule keeps them;
``file:line`` only names the rule in messages."""

from __future__ import annotations

import pytest

from lockgate.policy import Decision, PolicyErrors, Principal, Request
from tests.policy.policy_helpers import compile_policies, format_source, parse

BEFORE = """\
policy billing on "billing.>" {
  allow publish
  agent_rate: limit publish 5 per second by principal.agent
  limit publish 100 per hour
  invoices: reject duplicates of event.data.invoice within 10m
  reject duplicates within 30s
}
"""

# The same rules reordered, reformatted and pushed down by a new rule and comments.
AFTER = """\
# billing rules
policy billing on "billing.>" {
  allow publish
  deny publish when event.type == "x"
  reject   duplicates within 30s
  invoices:   reject duplicates of event.data.invoice within 10m
  # a comment
  limit publish 100 per hour
  agent_rate:
    limit publish 5 per second by principal.agent
}
"""


def _decide(text: str) -> Decision:
    ps = compile_policies({"billing.policy": text})
    req = Request(
        "publish",
        "billing.eu",
        Principal("acme", "bot", frozenset()),
        {"type": "t"},
        {"invoice": "i-1"},
    )
    return ps.decide(req)


def test_moving_and_reformatting_keeps_state_keys() -> None:
    before, after = _decide(BEFORE), _decide(AFTER)
    assert {x.key for x in before.limits} == {x.key for x in after.limits}
    assert {(x.key, x.identity) for x in before.dedup} == {(x.key, x.identity) for x in after.dedup}
    # ...while messages still name the rule where it now is.
    assert {x.rule for x in before.limits} != {x.rule for x in after.limits}
    assert "billing/agent_rate|bot" in {x.key for x in before.limits}
    assert "billing/invoices|i-1" in {x.key for x in before.dedup}


def test_fmt_keeps_labels_and_state_keys() -> None:
    formatted = format_source(AFTER)
    assert "  agent_rate: limit publish 5 per second by principal.agent\n" in formatted
    assert "  invoices: reject duplicates of event.data.invoice within 10m\n" in formatted
    assert format_source(formatted) == formatted
    assert {x.key for x in _decide(formatted).limits} == {x.key for x in _decide(AFTER).limits}


def test_editing_an_unlabelled_rule_starts_over_a_labelled_one_does_not() -> None:
    edited = BEFORE.replace("5 per second", "6 per second").replace("100 per hour", "99 per hour")
    before, after = _decide(BEFORE), _decide(edited)
    keys_before = {x.key for x in before.limits}
    keys_after = {x.key for x in after.limits}
    assert "billing/agent_rate|bot" in keys_before & keys_after
    assert len(keys_before - keys_after) == 1  # the unlabelled hourly limit


def test_identical_unlabelled_rules_get_distinct_identities() -> None:
    text = 'policy a on "a.>" {\n allow publish\n limit publish 1 per second\n'
    text += " limit publish 1 per second\n}\n"
    d = compile_policies({"a.policy": text}).decide(
        Request("publish", "a.b", Principal("o", "x", frozenset()))
    )
    first, second = (x.key for x in d.limits)
    assert second == first + "~2"


def test_label_position_is_the_rule_position() -> None:
    [p] = parse('policy a on "a.>" {\n  allow publish\n  r1: limit publish 1 per second\n}')
    rule = p.rules[1]
    assert (rule.label, rule.line, rule.column) == ("r1", 3, 3)


def test_duplicate_label_is_an_error() -> None:
    text = 'policy a on "a.>" {\n  allow publish\n  x: limit publish 1 per second\n'
    text += "  x: limit publish 2 per second\n}\n"
    with pytest.raises(PolicyErrors) as info:
        compile_policies({"a.policy": text})
    [err] = info.value.errors
    assert (err.line, err.message) == (4, "the label 'x' is already used at line 3")


def test_unlabelled_limit_and_dedup_rules_warn() -> None:
    ps = compile_policies({"billing.policy": BEFORE})
    warned = sorted((w.line, w.message) for w in ps.warnings)
    assert warned == [
        (4, "this limit has no label, so any edit of it starts its state over"),
        (6, "this duplicate rule has no label, so any edit of it starts its state over"),
    ]
    assert "rate: limit publish 100 per hour" in ps.warnings[0].hint


@pytest.mark.parametrize(
    "text",
    [
        'policy a on "a.>" { x : allow publish }',  # space before the colon
        'policy a on "a.>" { x: y: allow publish }',
        'policy a on "a.>" { x: }',
    ],
)
def test_bad_labels_are_syntax_errors(text: str) -> None:
    with pytest.raises(PolicyErrors):
        compile_policies({"a.policy": text})
