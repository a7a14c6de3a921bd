"""``PolicyService``: hot swap of the global policy set (the broker's admin) and of each
org's own set (``org``: that org's org-admin, or the broker's admin)."""

from __future__ import annotations

from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.errors import FailedPrecondition, NotFound
from lockgate.broker.node import Broker
from lockgate.broker.policies import PolicyManager
from lockgate.broker.rpc import Context, Servicer, unary
from lockgate.broker.store import PolicyVersionRecord
from lockgate.broker.v1 import policy_pb2

__all__ = ["PolicyService"]


class PolicyService(Servicer):
    """``PolicyService``: the policy sets; a request's ``org`` names an org's own set, and
    without one it acts on the whole broker's (see ``Servicer.authorized``)."""

    SERVICE = "broker.v1.PolicyService"
    BROKER_WIDE = True

    def __init__(self, broker: Broker, auth: Authenticator, policies: PolicyManager | None) -> None:
        super().__init__(broker, auth)
        self.policies = policies

    def _manager(self) -> PolicyManager:
        if self.policies is None:
            raise FailedPrecondition(
                "policies are not managed by this server", reason="NO_POLICIES"
            )
        return self.policies

    @staticmethod
    def _version(rec: PolicyVersionRecord) -> policy_pb2.PolicyVersion:
        v = policy_pb2.PolicyVersion(
            version=rec.version, active=rec.active, file_count=len(rec.files), origin=rec.origin
        )
        v.created_time.FromMilliseconds(rec.created_ms)
        return v

    @unary()
    async def PutPolicies(
        self, request: policy_pb2.PutPoliciesRequest, p: Principal, context: Context
    ) -> policy_pb2.PutPoliciesResponse:
        files = {f.name: f.source for f in request.files}
        ps = await self._manager().apply(
            files, "rpc", validate_only=request.validate_only, org=request.org
        )
        resp = policy_pb2.PutPoliciesResponse(version=ps.version, applied=not request.validate_only)
        for w in ps.warnings:
            resp.problems.add(
                file=w.file,
                line=w.line,
                column=w.column,
                message=w.message,
                hint=w.hint,
                severity="warning",
            )
        return resp

    @unary()
    async def GetPolicies(
        self, request: policy_pb2.GetPoliciesRequest, p: Principal, context: Context
    ) -> policy_pb2.GetPoliciesResponse:
        versions = await self._manager().versions(request.org)
        want = [
            v for v in versions if (v.version == request.version if request.version else v.active)
        ]
        if not want:
            raise NotFound(
                f"policy version {request.version or '(running)'} does not exist",
                reason="UNKNOWN_VERSION",
            )
        rec = want[0]
        return policy_pb2.GetPoliciesResponse(
            version=self._version(rec),
            files=[policy_pb2.PolicyFile(name=n, source=t) for n, t in sorted(rec.files.items())],
        )

    @unary()
    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, p: Principal, context: Context
    ) -> policy_pb2.ListPolicyVersionsResponse:
        versions = await self._manager().versions(request.org)
        return policy_pb2.ListPolicyVersionsResponse(versions=[self._version(v) for v in versions])

    @unary()
    async def RollbackPolicies(
        self, request: policy_pb2.RollbackPoliciesRequest, p: Principal, context: Context
    ) -> policy_pb2.RollbackPoliciesResponse:
        rec = await self._manager().rollback(request.version, request.org)
        out = self._version(rec)
        out.active = True
        return policy_pb2.RollbackPoliciesResponse(version=out)
