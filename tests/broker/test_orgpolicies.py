"""How the global set, an org's own set and default deny decide together (pure)."""

from __future__ import annotations

from lockgate.broker.orgpolicies import OrgPolicies
from lockgate.policy import Principal, Request, compile_policies

ACME = Principal("acme", "bot", frozenset())


def ps(text: str):  # type: ignore[no-untyped-def]
    return compile_policies({"p.policy": text})


def req(subject: str, action: str = "publish") -> Request:
    return Request(action, subject, ACME, {"type": "t", "id": "1", "source": "s"})


GLOBAL = ps(
    """
policy g on "shared.>" {
  allow publish
  tag "level" = "operator"
  ops: limit publish 10 per second
}
policy gdeny on "locked.>" {
  allow publish when false
}
"""
)
ORG = ps(
    """
policy o on "shared.>", "locked.>", "mine.>" {
  deny publish when subject[1] == "no" because "the org says no"
  allow publish
  tag "level" = "org"
  tag "team" = "acme"
  ops: limit publish 10 per second
}
"""
)


def test_a_refusal_in_either_wins() -> None:
    both = OrgPolicies(GLOBAL, ORG, "acme", default_deny=False)
    d = both.decide(req("shared.no"))
    assert (d.allowed, d.rule) == (False, "acme/p.policy:3")
    d = both.decide(req("locked.yes"))  # the org allows, the operator does not
    assert (d.allowed, d.effect, d.rule) == (False, "default", "")
    assert both.decide(req("mine.yes")).allowed


def test_effects_of_both_apply_and_the_org_state_is_its_own() -> None:
    d = OrgPolicies(GLOBAL, ORG, "acme", default_deny=False).decide(req("shared.yes"))
    assert d.allowed
    # The operator's tag is written last, so it wins on the same name.
    assert [(t.name, t.value) for t in d.tags][-1] == ("level", "operator")
    assert ("team", "acme") in [(t.name, t.value) for t in d.tags]
    assert sorted(x.key for x in d.limits) == ["g/ops", "org:acme/o/ops"]
    other = OrgPolicies(GLOBAL, ORG, "globex", default_deny=False).decide(req("shared.yes"))
    assert {x.key for x in other.limits} != {x.key for x in d.limits}


def test_default_deny_only_for_what_no_policy_covers() -> None:
    off = OrgPolicies(GLOBAL, None, "acme", default_deny=False)
    on = OrgPolicies(GLOBAL, None, "acme", default_deny=True)
    assert off.decide(req("nobody.covers")).allowed
    d = on.decide(req("nobody.covers"))
    assert (d.allowed, d.effect, d.rule) == (False, "default", "default_deny")
    assert on.decide(req("shared.x")).allowed
    assert OrgPolicies(None, ORG, "acme", default_deny=True).decide(req("mine.x")).allowed
    # Subscriptions too, wildcards included.
    assert not on.decide(req("nobody.>", "subscribe")).allowed
    assert (
        OrgPolicies(None, None, "acme", default_deny=True).decide(req(">", "subscribe")).effect
        == "default"
    )


def test_versions_and_inputs() -> None:
    both = OrgPolicies(GLOBAL, ORG, "acme", default_deny=False)
    assert both.version == f"{GLOBAL.version}+acme:{ORG.version}"
    assert OrgPolicies(None, None, "x", default_deny=True).version == "none"
    assert both.event_inputs("shared.x").names == ()
