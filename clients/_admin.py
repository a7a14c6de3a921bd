"""``client.admin``: durables, dead letters, policies and the audit log, in the client's own
types.

The calls need the ``org-admin`` role in the caller's org (durables, dead letters, the org's
own policy set) or the broker's ``admin`` (the global policy set), or the open dev mode.
Results are small frozen dataclasses (``_admin_models``, re-exported here), never generated
protobuf messages, so callers do not depend on the wire classes.

Example::

    async with Client(target, api_key=admin_key) as c:
        for d in await c.admin.list_durables():
            print(d.name, d.pending_count)
        await c.admin.put_policies({"billing.policy": text})
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import Message as _Message

from lockgate.broker.v1 import admin_pb2, audit_pb2, policy_pb2
from lockgate.clients._admin_models import (
    AuditRecord,
    ClusterNode,
    DeadLetter,
    DurableInfo,
    DurableState,
    DurableStatus,
    NodeStatus,
    PendingDelivery,
    PolicyProblem,
    PolicySet,
    PolicyUpdate,
    PolicyVersion,
    WebhookSecrets,
    time_of,
)
from lockgate.clients._channel import ADMIN, AUDIT, POLICY
from lockgate.clients._cluster import ClusterAdmin
from lockgate.clients._codec import StartSpec, to_duration, to_start_position
from lockgate.clients._message import StoredEvent

__all__ = [
    "Admin",
    "AuditRecord",
    "ClusterNode",
    "DeadLetter",
    "DurableInfo",
    "DurableState",
    "DurableStatus",
    "NodeStatus",
    "PendingDelivery",
    "PolicyProblem",
    "PolicySet",
    "PolicyUpdate",
    "PolicyVersion",
    "WebhookSecrets",
]

_R = TypeVar("_R", bound=_Message)


class Admin(ClusterAdmin):
    """The administrative calls of a :class:`~clients.Client`; get it as ``client.admin``
    (the backbone registry and the config store: see :class:`~clients.ClusterAdmin`)."""

    def __init__(self, unary: Callable[..., Awaitable[_Message]]) -> None:
        self._unary = unary

    async def _call(self, method: str, request: _Message, response_type: type[_R]) -> _R:
        response = await self._unary(method, request, response_type)
        assert isinstance(response, response_type)
        return response

    # -- durables -----------------------------------------------------------------------------

    async def create_durable(
        self,
        name: str,
        pattern: str,
        *,
        start: StartSpec | None = None,
        max_in_flight: int | None = None,
        ack_wait: float | dt.timedelta | None = None,
        max_deliveries: int | None = None,
        endpoint_url: str | None = None,
    ) -> DurableInfo:
        """Create a durable without binding a stream (for polling or webhooks); idempotent.

        >>> info = await c.admin.create_durable("billing", "orders.>", start="all")
        """
        request = admin_pb2.CreateDurableRequest(
            name=name,
            pattern=pattern,
            max_in_flight=max_in_flight or 0,
            max_deliveries=max_deliveries or 0,
            endpoint_url=endpoint_url or "",
        )
        position = to_start_position(start)
        if position is not None:
            request.start.CopyFrom(position)
        if ack_wait is not None:
            request.ack_wait.CopyFrom(to_duration(ack_wait))
        response = await self._call(
            ADMIN + "CreateDurable", request, admin_pb2.CreateDurableResponse
        )
        info = DurableInfo._of(response.durable)
        if response.webhook_secret:
            info = dataclasses.replace(info, webhook_secret=response.webhook_secret)
        return info

    async def rotate_webhook_secret(
        self, name: str, *, grace: float | dt.timedelta | None = None
    ) -> str:
        """A new signing secret for webhook durable ``name`` (shown once); the old one keeps
        signing beside it for ``grace`` (default 24 hours) while receivers switch.

        >>> secret = await c.admin.rotate_webhook_secret("invoices", grace=3600)
        """
        request = admin_pb2.RotateWebhookSecretRequest(name=name)
        if grace is not None:
            request.grace.CopyFrom(to_duration(grace))
        response = await self._call(
            ADMIN + "RotateWebhookSecret", request, admin_pb2.RotateWebhookSecretResponse
        )
        return response.webhook_secret

    async def webhook_secrets(self, name: str) -> WebhookSecrets:
        """The secrets webhook durable ``name`` signs with now, its org and its endpoint_url
        whole: what a standalone dispatcher (``lockgate gateway webhook``) signs with and
        POSTs to. Each call is audited.

        >>> (await c.admin.webhook_secrets("invoices")).org
        """
        response = await self._call(
            ADMIN + "GetWebhookSecrets",
            admin_pb2.GetWebhookSecretsRequest(name=name),
            admin_pb2.GetWebhookSecretsResponse,
        )
        return WebhookSecrets(response.org, list(response.webhook_secrets), response.endpoint_url)

    async def status(self) -> NodeStatus:
        """The status of the node this client reached (the ``org-admin`` role)."""
        r = await self._call(
            ADMIN + "GetStatus", admin_pb2.GetStatusRequest(), admin_pb2.GetStatusResponse
        )
        durables = tuple(
            DurableStatus(
                d.org,
                d.name,
                d.pending_count,
                d.ready_count,
                d.lag,
                d.connected,
                d.dead_letters,
                d.dead_letters_capped,
            )
            for d in r.durables
        )
        return NodeStatus(
            r.node_id,
            r.store,
            r.history_lag if r.history_lag_known else None,
            r.events_published,
            r.events_delivered,
            r.events_rejected,
            r.subscriptions,
            durables,
            r.time_ms / 1000,
            tuple(
                ClusterNode(
                    n.node_id,
                    n.last_heard_ms / 1000,
                    n.worker_id,
                    n.version,
                    n.listen,
                    n.started_ms / 1000,
                    n.backbone,
                    n.events_per_second,
                    n.subscriptions,
                    n.durables,
                    n.card_unknown,
                )
                for n in r.nodes
            ),
        )

    async def list_durables(self) -> list[DurableInfo]:
        """The org's durable subscriptions, by name."""
        response = await self._call(
            ADMIN + "ListDurables", admin_pb2.ListDurablesRequest(), admin_pb2.ListDurablesResponse
        )
        return [DurableInfo._of(d) for d in response.durables]

    async def get_durable(self, name: str) -> DurableState:
        """One durable subscription and its pending deliveries (``NotFound`` if none)."""
        response = await self._call(
            ADMIN + "GetDurable",
            admin_pb2.GetDurableRequest(name=name),
            admin_pb2.GetDurableResponse,
        )
        pending = [
            PendingDelivery(
                p.id, p.attempt, time_of(p.deadline) if p.HasField("deadline") else None
            )
            for p in response.pending
        ]
        return DurableState(DurableInfo._of(response.durable), pending)

    async def delete_durable(self, name: str) -> None:
        """Remove a durable subscription and its state."""
        await self._call(
            ADMIN + "DeleteDurable",
            admin_pb2.DeleteDurableRequest(name=name),
            admin_pb2.DeleteDurableResponse,
        )

    # -- dead letters -------------------------------------------------------------------------

    async def list_dead_letters(self, durable: str | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, of one durable or of all."""
        request = admin_pb2.ListDeadLettersRequest(durable=durable or "", page_size=1000)
        out: list[DeadLetter] = []
        while True:
            page = await self._call(
                ADMIN + "ListDeadLetters", request, admin_pb2.ListDeadLettersResponse
            )
            out.extend(
                DeadLetter(d.id, d.durable, d.attempts, time_of(d.dead_time), StoredEvent(d.event))
                for d in page.dead_letters
            )
            if not page.next_page_token or not page.dead_letters:
                return out
            request.page_token = page.next_page_token

    async def redrive(self, durable: str, ids: Sequence[int] | None = None) -> int:
        """Give dead letters back to their durable (all without ``ids``); returns how many."""
        response = await self._call(
            ADMIN + "RedriveDeadLetters",
            admin_pb2.RedriveDeadLettersRequest(durable=durable, ids=list(ids or ())),
            admin_pb2.RedriveDeadLettersResponse,
        )
        return response.count

    # -- policies -----------------------------------------------------------------------------

    async def put_policies(
        self, files: Mapping[str, str], *, validate_only: bool = False, org: str = ""
    ) -> PolicyUpdate:
        """Check a whole policy set (file name -> source) and, unless ``validate_only``, run it:
        the broker's global set, or ``org``'s own set (that org's ``org-admin`` may).

        A set with errors raises :class:`~clients.InvalidArgument` (reason ``POLICY_INVALID``).
        """
        request = policy_pb2.PutPoliciesRequest(
            files=[policy_pb2.PolicyFile(name=n, source=s) for n, s in files.items()],
            validate_only=validate_only,
            org=org,
        )
        response = await self._call(POLICY + "PutPolicies", request, policy_pb2.PutPoliciesResponse)
        problems = [
            PolicyProblem(p.file, p.line, p.column, p.message, p.hint, p.severity)
            for p in response.problems
        ]
        return PolicyUpdate(response.version, response.applied, problems)

    async def get_policies(self, version: str | None = None, *, org: str = "") -> PolicySet:
        """The files of a policy version (the running one without ``version``) of the global
        set, or of ``org``'s own."""
        response = await self._call(
            POLICY + "GetPolicies",
            policy_pb2.GetPoliciesRequest(version=version or "", org=org),
            policy_pb2.GetPoliciesResponse,
        )
        files = {f.name: f.source for f in response.files}
        return PolicySet(PolicyVersion._of(response.version), files)

    async def list_policy_versions(self, *, org: str = "") -> list[PolicyVersion]:
        """The versions of the global policy set (or of ``org``'s own), newest first."""
        response = await self._call(
            POLICY + "ListPolicyVersions",
            policy_pb2.ListPolicyVersionsRequest(org=org),
            policy_pb2.ListPolicyVersionsResponse,
        )
        return [PolicyVersion._of(v) for v in response.versions]

    async def rollback_policies(
        self, version: str | None = None, *, org: str = ""
    ) -> PolicyVersion:
        """Run an earlier version again (the one before the running one without ``version``)
        of the global set, or of ``org``'s own."""
        response = await self._call(
            POLICY + "RollbackPolicies",
            policy_pb2.RollbackPoliciesRequest(version=version or "", org=org),
            policy_pb2.RollbackPoliciesResponse,
        )
        return PolicyVersion._of(response.version)

    # -- the audit log ------------------------------------------------------------------------

    async def audit_page(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        org: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[AuditRecord], str]:
        """One page of audit records, oldest first, and the token of the next ("" after the
        last). Every filter is optional; ``action`` selects it and the actions below it."""
        request = audit_pb2.ListAuditRecordsRequest(
            org_filter=org or "",
            agent=agent or "",
            action=action or "",
            outcome=outcome or "",
            page_size=page_size,
            page_token=page_token,
        )
        if since is not None:
            request.since_time.FromDatetime(since)
        if until is not None:
            request.until_time.FromDatetime(until)
        response = await self._call(
            AUDIT + "ListAuditRecords", request, audit_pb2.ListAuditRecordsResponse
        )
        return [AuditRecord._of(r) for r in response.records], response.next_page_token

    async def audit(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        org: str | None = None,
        agent: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> AsyncIterator[AuditRecord]:
        """Every audit record the filters select, oldest first, page by page.

        >>> async for r in c.admin.audit(action="policy", since=an_hour_ago):
        ...     print(r.time, r.agent, r.action, r.outcome)
        """
        token = ""
        while True:
            records, token = await self.audit_page(
                since=since,
                until=until,
                org=org,
                agent=agent,
                action=action,
                outcome=outcome,
                page_size=1000,
                page_token=token,
            )
            for r in records:
                yield r
            if not token or not records:
                return
