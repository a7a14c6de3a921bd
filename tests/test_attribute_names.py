"""One rule for extension attribute names: the broker's event checks and the policy checker
accept and refuse the same names (they disagreed before: policies capped names at 20)."""

from __future__ import annotations

import pytest

from lockgate.broker.cloudevents import is_name
from lockgate.policy import PolicyErrors, compile_policies

NAMES = ["traceparent", "123", "a" * 20, "b" * 21, "c" * 64, "d" * 65, "Ü", "ü", "has_under", "id"]


def _policy_accepts(name: str) -> bool:
    source = f'policy p on "x.>" {{\n  allow publish\n  t: tag "{name}" = "v"\n}}\n'
    try:
        compile_policies({"p.policy": source})
    except PolicyErrors:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_broker_and_policies_agree_on_a_name(name: str) -> None:
    assert is_name(name) == _policy_accepts(name)


def test_the_rule_itself() -> None:
    assert [n for n in NAMES if is_name(n)] == ["traceparent", "123", "a" * 20, "b" * 21, "c" * 64]
