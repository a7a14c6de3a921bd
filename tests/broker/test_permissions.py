"""The roles table itself: who holds which role, and what acting elsewhere needs."""

from __future__ import annotations

import pytest

from lockgate.broker.auth import DEV_PRINCIPAL, Principal
from lockgate.broker.errors import PermissionDenied
from lockgate.broker.permissions import (
    ACTIONS,
    ADMIN,
    AGENT,
    BROKER,
    HTTP_ACTIONS,
    ORG_ADMIN,
    ROLES,
    RPC_ACTIONS,
    WS_ACTIONS,
    Permissions,
    role_of,
)


def p(org: str, *roles: str) -> Principal:
    return Principal(org, "a", frozenset(roles))


def test_who_holds_which_role() -> None:
    assert role_of(DEV_PRINCIPAL, "default") == ADMIN  # the dev mode keeps working
    assert role_of(p("default", "admin"), "default") == ADMIN
    assert role_of(p("acme", "admin"), "default") == ORG_ADMIN  # an existing org's admin key
    assert role_of(p("acme", "admin"), "acme") == ADMIN  # admin_org moved
    assert role_of(p("acme", "org-admin"), "default") == ORG_ADMIN
    assert role_of(p("default", "org-admin"), "default") == ORG_ADMIN
    assert role_of(p("acme", "billing"), "default") == AGENT
    assert role_of(p("acme"), "default") == AGENT


def test_every_entry_names_a_known_action_and_role() -> None:
    assert {a.needs for a in ACTIONS.values()} <= set(ROLES)
    named = set(RPC_ACTIONS.values()) | set(HTTP_ACTIONS.values()) | set(WS_ACTIONS.values())
    assert named - {""} <= set(ACTIONS)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_another_org_or_the_broker_needs_admin(action: str) -> None:
    perms = Permissions("default")
    for who in (p("acme"), p("acme", "org-admin"), p("acme", "admin")):
        assert not perms.allows(who, action, "globex")
        assert not perms.allows(who, action, BROKER)
    assert perms.allows(p("default", "admin"), action, "globex")
    assert perms.allows(p("default", "admin"), action, BROKER)


def test_refusal_names_action_role_and_hint() -> None:
    with pytest.raises(PermissionDenied) as exc:
        Permissions("default").authorize(p("evil", "admin"), "policy.write", BROKER)
    err = exc.value
    assert err.reason == "PERMISSION_DENIED"
    assert err.metadata == {"action": "policy.write", "needs": "admin", "role": "org-admin"}
    assert "whole broker" in err.message and "'default'" in err.hint
    with pytest.raises(PermissionDenied) as exc:
        Permissions("default").authorize(p("acme"), "durable.manage", "acme")
    assert exc.value.metadata["needs"] == "org-admin"
    assert "in its own org" in exc.value.message
