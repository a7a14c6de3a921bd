"""``AuditService``: reading the audit log (the admin role; see ``broker.audit``)."""

from __future__ import annotations

from lockgate.broker.audit_read import read_page
from lockgate.broker.auth import Principal
from lockgate.broker.rpc import Context, Servicer, page_after, timestamp_ms, unary
from lockgate.broker.store import AuditQuery, AuditRecord
from lockgate.broker.v1 import audit_pb2

__all__ = ["AuditService", "audit_message"]


def audit_message(rec: AuditRecord) -> audit_pb2.AuditRecord:
    m = audit_pb2.AuditRecord(
        id=rec.id,
        org=rec.org,
        agent=rec.agent,
        credential=rec.credential,
        action=rec.action,
        target=rec.target,
        outcome=rec.outcome,
        surface=rec.surface,
        peer=rec.peer,
        count=rec.count,
        detail=dict(rec.detail),
    )
    m.time.FromMilliseconds(rec.time_ms)
    return m


class AuditService(Servicer):
    """``AuditService``: the admin role reads every org's records, an org-admin its own
    (``audit_scope``, the rule the HTTP route applies too)."""

    SERVICE = "broker.v1.AuditService"

    @unary()
    async def ListAuditRecords(
        self, request: audit_pb2.ListAuditRecordsRequest, p: Principal, context: Context
    ) -> audit_pb2.ListAuditRecordsResponse:
        since = (
            timestamp_ms(request.since_time, "since_time") if request.HasField("since_time") else 0
        )
        until = (
            timestamp_ms(request.until_time, "until_time") if request.HasField("until_time") else 0
        )
        query = AuditQuery(
            after_id=page_after(request.page_token),
            start_ms=since,
            end_ms=until,
            agent=request.agent,
            action=request.action,
            outcome=request.outcome,
            limit=request.page_size,
        )
        b = self.broker
        org = request.org_filter
        records, last = await read_page(b.store, b.audit, b.permissions, p, org, query)
        resp = audit_pb2.ListAuditRecordsResponse(records=[audit_message(r) for r in records])
        if last:
            resp.next_page_token = str(last)
        return resp
