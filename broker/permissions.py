"""Who may do what: the built-in roles, the one table of actions, and :meth:`authorize`.

Every surface asks here, so an action has the same permission everywhere: the gRPC services
look their methods up in :data:`RPC_ACTIONS` (``broker.rpc`` refuses to serve a method that
has no entry), the in-process API that the HTTP and WebSocket gateways use names its action
on each call (:data:`HTTP_ACTIONS` and :data:`WS_ACTIONS` list the routes and frames), and
remote gateways reach the broker through gRPC. Policies then decide each event of an
allowed action (``broker.policyhook``).

The roles, lowest first (a role may do everything the ones before it may):

========== ===============================================================================
agent      publish, request, subscribe, read history, create and consume durables, in its
           own org, as the policies allow (a key without either admin role)
org-admin  also its own org's durables, dead letters, webhook durables and policy set
           (role ``org-admin``; or ``admin`` in any org other than ``admin_org``)
admin      the whole broker: every org's policy set and durables, the global policy set,
           the backbone registry and the config store
           (role ``admin`` in the org ``admin_org``, ``default`` unless configured; the open
           dev mode's ``default/anonymous`` is one)
========== ===============================================================================

A key with ``admin`` in another org administers that org only: before roles existed, the
durable and dead-letter calls of such a key always acted on its own org, so they keep
working, but it can no longer change the broker's global policy set (an attack showed an
org's admin denying another org's publishes that way).

Example::

    perms = Permissions(admin_org="default")
    perms.authorize(principal, "policy.write", "acme")   # acme's set: org-admin of acme
    perms.authorize(principal, "policy.write", BROKER)   # the global set: admin only
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from lockgate.broker.auth import Principal
from lockgate.broker.errors import PermissionDenied

__all__ = [
    "ACTIONS",
    "ADMIN",
    "AGENT",
    "BROKER",
    "HTTP_ACTIONS",
    "ORG_ADMIN",
    "ROLES",
    "RPC_ACTIONS",
    "WS_ACTIONS",
    "Action",
    "Permissions",
    "role_of",
]

AGENT: Final = "agent"
ORG_ADMIN: Final = "org-admin"
ADMIN: Final = "admin"
#: The built-in roles, lowest first.
ROLES: Final = (AGENT, ORG_ADMIN, ADMIN)
_RANK = {r: i for i, r in enumerate(ROLES)}
#: The org argument of :meth:`Permissions.authorize` for broker-wide targets (the global set).
BROKER: Final = None


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a caller may do: the lowest role that may, and what it is."""

    name: str
    needs: str
    what: str


def _table(*actions: Action) -> Mapping[str, Action]:
    return MappingProxyType({a.name: a for a in actions})


#: The one table: action -> the lowest role that may do it (in its own org; an action on
#: another org, or on the whole broker, needs ``admin``).
ACTIONS: Final = _table(
    Action("publish", AGENT, "publish events"),
    Action("request", AGENT, "send requests"),
    Action("subscribe", AGENT, "subscribe"),
    Action("history.read", AGENT, "read stored events"),
    Action("durable.create", AGENT, "create a durable subscription"),
    Action("durable.consume", AGENT, "poll, ack and nack a durable subscription"),
    Action("durable.webhook", ORG_ADMIN, "create a webhook durable (the broker calls out)"),
    Action("durable.manage", ORG_ADMIN, "list, inspect and delete durable subscriptions"),
    Action("dead_letters.manage", ORG_ADMIN, "list and redrive dead letters"),
    Action("policy.read", ORG_ADMIN, "read a policy set and its versions"),
    Action("policy.write", ORG_ADMIN, "put or roll back a policy set"),
    Action("keys.manage", ORG_ADMIN, "create, list and revoke API keys"),
    Action("audit.read", ORG_ADMIN, "read the audit log"),
    Action("status.read", ORG_ADMIN, "read the node's status (the history's lag)"),
    Action("metrics.read", ADMIN, "read the broker's metrics (/metrics on the HTTP gateway)"),
    Action("conversation.use", AGENT, "take part in conversations (as their rules allow)"),
    Action("conversation.keys", AGENT, "publish and read encryption keys of conversations"),
    Action(
        "activity.read",
        ADMIN,
        "read the broker's live activity: subject rates, subscriptions, denials, nodes",
    ),
    Action("registry.read", ADMIN, "read the backbone registry"),
    Action("registry.write", ADMIN, "create, update and delete backbone records"),
    Action("config.read", ADMIN, "read the config store and its versions"),
    Action("config.write", ADMIN, "change or roll back the config store"),
)

#: Every gRPC method (``/package.Service/Method``) -> its action. A request with an ``org``
#: field names the org it acts on (empty: the whole broker); any other acts on the caller's.
RPC_ACTIONS: Final = MappingProxyType(
    {
        "/broker.v1.BrokerService/Publish": "publish",
        "/broker.v1.BrokerService/PublishOne": "publish",
        "/broker.v1.BrokerService/Subscribe": "subscribe",
        "/broker.v1.BrokerService/Request": "request",
        "/broker.v1.BrokerService/RequestStream": "request",
        "/broker.v1.BrokerService/GetEvent": "history.read",
        "/broker.v1.BrokerService/QueryEvents": "history.read",
        "/broker.v1.BrokerService/Fetch": "durable.consume",
        "/broker.v1.BrokerService/Acknowledge": "durable.consume",
        "/broker.v1.AdminService/CreateDurable": "durable.create",
        "/broker.v1.AdminService/ListDurables": "durable.manage",
        "/broker.v1.AdminService/GetDurable": "durable.manage",
        "/broker.v1.AdminService/DeleteDurable": "durable.manage",
        "/broker.v1.AdminService/ListDeadLetters": "dead_letters.manage",
        "/broker.v1.AdminService/RedriveDeadLetters": "dead_letters.manage",
        "/broker.v1.AdminService/RotateWebhookSecret": "durable.webhook",
        "/broker.v1.AdminService/GetWebhookSecrets": "durable.webhook",
        "/broker.v1.AdminService/GetStatus": "status.read",
        "/broker.v1.PolicyService/PutPolicies": "policy.write",
        "/broker.v1.PolicyService/GetPolicies": "policy.read",
        "/broker.v1.PolicyService/ListPolicyVersions": "policy.read",
        "/broker.v1.PolicyService/RollbackPolicies": "policy.write",
        # Its org_filter is a filter, not the org acted on: audit_scope applies it.
        "/broker.v1.AuditService/ListAuditRecords": "audit.read",
        # Who may do what inside a conversation (participant, owner, admin) is the
        # conversation's own rule (broker.conversations), checked after this.
        "/broker.v1.ConversationService/CreateConversation": "conversation.use",
        "/broker.v1.ConversationService/GetConversation": "conversation.use",
        "/broker.v1.ConversationService/ListConversations": "conversation.use",
        "/broker.v1.ConversationService/InviteMembers": "conversation.use",
        "/broker.v1.ConversationService/JoinConversation": "conversation.use",
        "/broker.v1.ConversationService/LeaveConversation": "conversation.use",
        "/broker.v1.ConversationService/RemoveMember": "conversation.use",
        "/broker.v1.ConversationService/CloseConversation": "conversation.use",
        "/broker.v1.ConversationService/SendMessage": "conversation.use",
        "/broker.v1.ConversationService/GetHistory": "conversation.use",
        "/broker.v1.ConversationService/MarkReceipts": "conversation.use",
        "/broker.v1.ConversationService/GetReceipts": "conversation.use",
        "/broker.v1.ConversationService/SetTyping": "conversation.use",
        "/broker.v1.ConversationService/GetPresence": "conversation.use",
        "/broker.v1.ConversationService/PublishKey": "conversation.keys",
        "/broker.v1.ConversationService/GetKeys": "conversation.keys",
        "/broker.v1.ConversationService/PutGroupKeys": "conversation.keys",
        "/broker.v1.ConversationService/GetGroupKeys": "conversation.keys",
        "/broker.v1.RegistryService/CreateBackbone": "registry.write",
        "/broker.v1.RegistryService/GetBackbone": "registry.read",
        "/broker.v1.RegistryService/UpdateBackbone": "registry.write",
        "/broker.v1.RegistryService/DeleteBackbone": "registry.write",
        "/broker.v1.RegistryService/ListBackbones": "registry.read",
        "/broker.v1.ConfigService/GetConfig": "config.read",
        "/broker.v1.ConfigService/SetConfig": "config.write",
        "/broker.v1.ConfigService/ListConfigVersions": "config.read",
        "/broker.v1.ConfigService/RollbackConfig": "config.write",
    }
)

#: Every HTTP gateway route (method, path as registered) -> its action; the WebSocket route
#: decides each frame by :data:`WS_ACTIONS`. A durable created with ``endpoint_url`` is also
#: ``durable.webhook``, on every surface.
HTTP_ACTIONS: Final = MappingProxyType(
    {
        ("POST", "/v1/subjects/{subject}/events"): "publish",
        ("GET", "/v1/events/{id}"): "history.read",
        ("GET", "/v1/events"): "history.read",
        ("PUT", "/v1/subscriptions/{durable}"): "durable.create",
        ("GET", "/v1/subscriptions/{durable}/events"): "durable.consume",
        ("POST", "/v1/subscriptions/{durable}/acks"): "durable.consume",
        ("GET", "/v1/audit"): "audit.read",
        ("GET", "/v1/backbones"): "registry.read",
        ("POST", "/v1/backbones"): "registry.write",
        ("GET", "/v1/backbones/{id}"): "registry.read",
        ("PUT", "/v1/backbones/{id}"): "registry.write",
        ("DELETE", "/v1/backbones/{id}"): "registry.write",
        ("GET", "/v1/config"): "config.read",
        ("PATCH", "/v1/config"): "config.write",
        ("GET", "/v1/config/versions"): "config.read",
        ("POST", "/v1/config/rollback"): "config.write",
        ("GET", "/v1/ws"): "",
        ("GET", "/metrics"): "metrics.read",
        # The dashboard (inside `lockgate serve` only): the page is static and public (it
        # holds no data); each read it makes is authorized here.
        ("GET", "/dashboard"): "",
        ("GET", "/dashboard/{path}"): "",
        ("GET", "/v1/activity/subjects"): "activity.read",
        ("GET", "/v1/activity/subscriptions"): "activity.read",
        ("GET", "/v1/activity/denials"): "activity.read",
        ("GET", "/v1/activity/nodes"): "activity.read",
        ("GET", "/v1/deadletters"): "dead_letters.manage",
        ("POST", "/v1/deadletters/redrive"): "dead_letters.manage",
        ("GET", "/v1/policies/versions"): "policy.read",
        ("GET", "/v1/policies/diff"): "policy.read",
    }
)

#: WebSocket frames (``op``) -> their action ("" for those that act on the socket only).
WS_ACTIONS: Final = MappingProxyType(
    {
        "subscribe": "subscribe",
        "unsubscribe": "",
        "publish": "publish",
        "ack": "durable.consume",
        "nack": "durable.consume",
        # Chat frames: the ConversationService methods they call (its actions).
        "join": "conversation.use",
        "leave": "conversation.use",
        "send": "conversation.use",
        "typing": "conversation.use",
    }
)


def role_of(principal: Principal, admin_org: str) -> str:
    """The built-in role ``principal`` holds (see the module's table)."""
    roles = principal.roles
    if "admin" in roles:
        return ADMIN if principal.org == admin_org else ORG_ADMIN
    if "org-admin" in roles:
        return ORG_ADMIN
    return AGENT


class Permissions:
    """The table applied: :meth:`authorize` raises unless the principal may act."""

    def __init__(self, admin_org: str = "default") -> None:
        self.admin_org = admin_org

    def role(self, principal: Principal) -> str:
        return role_of(principal, self.admin_org)

    def allows(self, principal: Principal, action: str, org: str | None) -> bool:
        """Whether ``principal`` may do ``action`` on ``org`` (``None``: the whole broker)."""
        have = _RANK[role_of(principal, self.admin_org)]
        need = _RANK[ACTIONS[action].needs]
        if org != principal.org:  # another org, or the whole broker
            need = _RANK[ADMIN]
        return have >= need

    def authorize(self, principal: Principal, action: str, org: str | None) -> None:
        """Raises :class:`PermissionDenied` (reason ``PERMISSION_DENIED``, metadata ``action``
        and ``needs``) unless ``principal`` may do ``action`` on ``org`` (``None``, i.e.
        :data:`BROKER`: the whole broker, such as the global policy set)."""
        if self.allows(principal, action, org):
            return
        a = ACTIONS[action]
        role = role_of(principal, self.admin_org)
        needs = a.needs if org == principal.org else ADMIN
        where = (
            "on the whole broker"
            if org is None
            else "in its own org"
            if org == principal.org
            else f"in org {org[:80]!r}"
        )
        if needs == ADMIN:
            hint = f"use a key with the admin role in org {self.admin_org!r}"
            if role == ORG_ADMIN and action.startswith("policy."):
                hint += (
                    f", or manage org {principal.org!r}'s own set "
                    f"(the request's org; lockgate policy push --org {principal.org})"
                )
            elif role == ORG_ADMIN:
                hint += f", or act on org {principal.org!r} only"
        else:
            hint = "use a key created with --role org-admin (or admin) in this org"
        raise PermissionDenied(
            f"{principal.org}/{principal.agent} ({role}) may not {a.what} {where}: "
            f"that needs the {needs} role",
            reason="PERMISSION_DENIED",
            hint=hint,
            metadata={"action": action, "needs": needs, "role": role},
        )
