"""``AdminService`` (durables, dead letters) and ``PolicyService`` (hot swap)."""

from __future__ import annotations

import contextlib

import grpc

from broker.auth import Authenticator, Principal
from broker.durables import DurableOptions
from broker.errors import BrokerError, FailedPrecondition, InvalidArgument, NotFound
from broker.node import Broker
from broker.policies import PolicyManager
from broker.rpc import Servicer, start_spec
from broker.store import PolicyVersionRecord
from broker.v1 import admin_pb2, policy_pb2

__all__ = ["AdminServicer", "PolicyServicer"]


class AdminServicer(Servicer):
    """``AdminService``: every call needs the admin role."""

    def _info(self, name: str, org: str) -> admin_pb2.DurableInfo:
        c = self.broker.durable(org, name)
        rec = c.rec
        info = admin_pb2.DurableInfo(
            name=c.name,
            pattern=rec.pattern,
            ack_floor=c.ack_floor,
            pending_count=len(c.pending),
            connected=len(c.sessions),
            max_deliveries=rec.max_deliveries,
            max_in_flight=rec.max_in_flight,
            delivered_id=c.delivered_id,
            endpoint_url=rec.endpoint_url,
        )
        info.ack_wait.FromMilliseconds(rec.ack_wait_ms)
        return info

    async def CreateDurable(
        self, request: admin_pb2.CreateDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateDurableResponse:
        async def run(p: Principal) -> admin_pb2.CreateDurableResponse:
            start = start_spec(request.start)
            options = DurableOptions(
                start=start,
                max_in_flight=request.max_in_flight,
                ack_wait=request.ack_wait.ToMilliseconds() / 1000,
                max_deliveries=request.max_deliveries,
                endpoint_url=request.endpoint_url,
            )
            await self.broker.create_durable(p, request.name, request.pattern, options)
            return admin_pb2.CreateDurableResponse(durable=self._info(request.name, p.org))

        return await self._unary(context, run)  # the broker checks who may create

    async def ListDurables(
        self, request: admin_pb2.ListDurablesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDurablesResponse:
        async def run(p: Principal) -> admin_pb2.ListDurablesResponse:
            names = sorted(n for (org, n) in self.broker.consumers if org == p.org)
            return admin_pb2.ListDurablesResponse(durables=[self._info(n, p.org) for n in names])

        return await self._unary(context, run, admin=True)

    async def GetDurable(
        self, request: admin_pb2.GetDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetDurableResponse:
        async def run(p: Principal) -> admin_pb2.GetDurableResponse:
            info = self._info(request.name, p.org)
            c = self.broker.durable(p.org, request.name)
            resp = admin_pb2.GetDurableResponse(durable=info)
            for i in sorted(c.pending)[:1000]:
                resp.pending.add(id=i, attempt=c.pending[i].attempt)
            return resp

        return await self._unary(context, run, admin=True)

    async def DeleteDurable(
        self, request: admin_pb2.DeleteDurableRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.DeleteDurableResponse:
        async def run(p: Principal) -> admin_pb2.DeleteDurableResponse:
            await self.broker.delete_durable(p.org, request.name)
            return admin_pb2.DeleteDurableResponse()

        return await self._unary(context, run, admin=True)

    async def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListDeadLettersResponse:
        async def run(p: Principal) -> admin_pb2.ListDeadLettersResponse:
            after = (0, 0)
            if request.page_token:
                try:
                    a, b = request.page_token.split(":")
                    after = (int(a), int(b))
                except ValueError:
                    raise InvalidArgument(
                        "page_token is not one this broker issued", reason="INVALID_PAGE_TOKEN"
                    ) from None
            if request.durable:
                self.broker.durable(p.org, request.durable)
            size = min(request.page_size or 100, 1000)
            recs = await self.broker.store.list_dead_letters(p.org, request.durable, after, size)
            resp = admin_pb2.ListDeadLettersResponse()
            for r in recs:
                dl = resp.dead_letters.add(id=r.id, durable=r.durable, attempts=r.attempts)
                dl.dead_time.FromMilliseconds(r.dead_ms)
                with contextlib.suppress(BrokerError):
                    dl.event.CopyFrom(await self.broker.get_event(p.org, r.id))
            if len(recs) == size:
                resp.next_page_token = f"{recs[-1].dead_ms}:{recs[-1].id}"
            return resp

        return await self._unary(context, run, admin=True)

    async def RedriveDeadLetters(
        self, request: admin_pb2.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RedriveDeadLettersResponse:
        async def run(p: Principal) -> admin_pb2.RedriveDeadLettersResponse:
            n = await self.broker.redrive(p.org, request.durable, list(request.ids) or None)
            return admin_pb2.RedriveDeadLettersResponse(count=n)

        return await self._unary(context, run, admin=True)


class PolicyServicer(Servicer):
    """``PolicyService``: hot swap of the policy set (admin role)."""

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

    async def PutPolicies(
        self, request: policy_pb2.PutPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.PutPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.PutPoliciesResponse:
            files = {f.name: f.source for f in request.files}
            ps = await self._manager().apply(files, "rpc", validate_only=request.validate_only)
            resp = policy_pb2.PutPoliciesResponse(
                version=ps.version, applied=not request.validate_only
            )
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

        return await self._unary(context, run, admin=True)

    async def GetPolicies(
        self, request: policy_pb2.GetPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.GetPoliciesResponse:
            versions = await self._manager().versions()
            want = [
                v
                for v in versions
                if (v.version == request.version if request.version else v.active)
            ]
            if not want:
                raise NotFound(
                    f"policy version {request.version or '(running)'} does not exist",
                    reason="UNKNOWN_VERSION",
                )
            rec = want[0]
            return policy_pb2.GetPoliciesResponse(
                version=self._version(rec),
                files=[
                    policy_pb2.PolicyFile(name=n, source=t) for n, t in sorted(rec.files.items())
                ],
            )

        return await self._unary(context, run, admin=True)

    async def ListPolicyVersions(
        self, request: policy_pb2.ListPolicyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ListPolicyVersionsResponse:
        async def run(p: Principal) -> policy_pb2.ListPolicyVersionsResponse:
            versions = await self._manager().versions()
            return policy_pb2.ListPolicyVersionsResponse(
                versions=[self._version(v) for v in versions]
            )

        return await self._unary(context, run, admin=True)

    async def RollbackPolicies(
        self, request: policy_pb2.RollbackPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.RollbackPoliciesResponse:
        async def run(p: Principal) -> policy_pb2.RollbackPoliciesResponse:
            rec = await self._manager().rollback(request.version)
            out = self._version(rec)
            out.active = True
            return policy_pb2.RollbackPoliciesResponse(version=out)

        return await self._unary(context, run, admin=True)
