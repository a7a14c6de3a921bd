"""Reading the audit log: whose records a caller may read, a page at a time, the same answer
on every surface (gRPC, HTTP, a standalone gateway through gRPC)."""

from __future__ import annotations

import dataclasses

from lockgate.broker.audit import AuditLog
from lockgate.broker.auth import Principal
from lockgate.broker.errors import PermissionDenied
from lockgate.broker.permissions import ADMIN, Permissions
from lockgate.broker.store import AuditQuery, AuditRecord, AuditStore

__all__ = ["MAX_PAGE", "audit_scope", "read_page"]


def audit_scope(principal: Principal, org: str, permissions: Permissions) -> str | None:
    """The org whose records ``principal`` may read when asking for ``org`` ("": all it may):
    ``None`` means every org. The broker's admin reads every org's (and the broker's own,
    org-less, records); an org's administrator its own org's only; an agent none (the
    ``audit.read`` action of ``broker.permissions``). The one rule, for every surface."""
    if permissions.role(principal) == ADMIN:
        return org or None
    wanted = org or principal.org
    permissions.authorize(principal, "audit.read", wanted)
    return wanted


MAX_PAGE = 1000
"""The most records one page of the audit log holds, whatever the caller asks."""


async def read_page(
    store: AuditStore,
    log: AuditLog,
    permissions: Permissions,
    principal: Principal,
    org: str,
    query: AuditQuery,
) -> tuple[list[AuditRecord], int]:
    """A page of the records ``principal`` may read when asking for ``org`` (``audit_scope``;
    a refusal is recorded), at most ``MAX_PAGE``, and the cursor for the next page (0 on the
    last): what every surface (gRPC, HTTP, a standalone gateway through gRPC) answers."""
    try:
        scope = audit_scope(principal, org, permissions)
    except PermissionDenied as err:
        log.denied("access", "audit.read", err)
        raise
    limit = min(query.limit or 100, MAX_PAGE)
    records = await store.query_audit(dataclasses.replace(query, org=scope, limit=limit))
    return records, records[-1].id if len(records) == limit else 0
