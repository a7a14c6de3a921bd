"""A subscription to a wildcard pattern needs the permission of every policy it reaches (whose
patterns overlap it), so ``>`` cannot receive the events of a policy that never allowed it."""

from __future__ import annotations

import pytest

from lockgate.policy import Principal, Request
from tests.policy.policy_helpers import compile_policies

SETS = {
    "b.policy": 'policy b on "billing.>" {\n  allow subscribe when "finance" in principal.roles\n}',
    "o.policy": 'policy o on "ops.>" {\n  allow subscribe when "ops" in principal.roles\n}\n',
    "d.policy": 'policy d on "$dlq.>" {\n  deny subscribe\n}\n',
}
PS = compile_policies(SETS)


@pytest.mark.parametrize(
    ("roles", "pattern", "allowed"),
    [
        ((), "billing.eu", False),
        ((), ">", False),
        ((), "*.eu", False),
        ((), "misc.>", True),  # reaches no policy: allowed by default
        (("finance",), "billing.*", True),
        (("finance",), ">", False),  # reaches ops.> too
        (("finance",), "*.eu", False),
        (("finance", "ops"), ">", True),  # the $dlq policy is not reached by ">"
        (("finance", "ops"), "$dlq.>", False),
        (("ops",), "ops.>", True),
    ],
)
def test_wildcards_need_every_reached_policy(
    roles: tuple[str, ...], pattern: str, allowed: bool
) -> None:
    req = Request("subscribe", pattern, Principal("acme", "x", frozenset(roles)))
    d = PS.decide(req)
    assert d.allowed is allowed, d
    assert PS.explain(req).allowed is allowed


def test_a_denial_names_the_policy_that_refused() -> None:
    req = Request("subscribe", ">", Principal("acme", "x", frozenset({"finance"})))
    d = PS.decide(req)
    assert (d.allowed, d.effect) == (False, "default")
    assert "no rule allows subscribe on >" in d.reason
    assert any("o.policy" in line or "ops" in line for line in PS.explain(req).trace)
