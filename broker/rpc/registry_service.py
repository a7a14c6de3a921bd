"""``RegistryService``: the backbone registry (the broker's admin; see ``broker.registry``)."""

from __future__ import annotations

from lockgate.broker.auth import Principal
from lockgate.broker.rpc import Context, Servicer, unary
from lockgate.broker.store import BackboneRecord
from lockgate.broker.v1 import registry_pb2

__all__ = ["RegistryService", "backbone_message", "backbone_record"]


def backbone_message(rec: BackboneRecord) -> registry_pb2.Backbone:
    m = registry_pb2.Backbone(
        id=rec.id,
        endpoint=rec.endpoint,
        org_ids=list(rec.orgs),
        cluster_ids=list(rec.clusters),
        region=rec.region,
        version=rec.version,
        status=rec.status,
    )
    m.create_time.FromMilliseconds(rec.created_ms)
    m.update_time.FromMilliseconds(rec.updated_ms)
    return m


def backbone_record(m: registry_pb2.Backbone) -> BackboneRecord:
    return BackboneRecord(
        m.id,
        m.endpoint,
        tuple(m.org_ids),
        tuple(m.cluster_ids),
        m.region,
        m.version,
        m.status,
    )


class RegistryService(Servicer):
    """``RegistryService``: every call acts on the whole broker (the admin role)."""

    SERVICE = "broker.v1.RegistryService"
    BROKER_WIDE = True

    @unary()
    async def CreateBackbone(
        self, request: registry_pb2.CreateBackboneRequest, p: Principal, context: Context
    ) -> registry_pb2.CreateBackboneResponse:
        rec = await self.broker.registry.create(backbone_record(request.backbone))
        return registry_pb2.CreateBackboneResponse(backbone=backbone_message(rec))

    @unary()
    async def GetBackbone(
        self, request: registry_pb2.GetBackboneRequest, p: Principal, context: Context
    ) -> registry_pb2.GetBackboneResponse:
        rec = await self.broker.registry.get(request.id)
        return registry_pb2.GetBackboneResponse(backbone=backbone_message(rec))

    @unary()
    async def UpdateBackbone(
        self, request: registry_pb2.UpdateBackboneRequest, p: Principal, context: Context
    ) -> registry_pb2.UpdateBackboneResponse:
        rec = await self.broker.registry.update(backbone_record(request.backbone))
        return registry_pb2.UpdateBackboneResponse(backbone=backbone_message(rec))

    @unary()
    async def DeleteBackbone(
        self, request: registry_pb2.DeleteBackboneRequest, p: Principal, context: Context
    ) -> registry_pb2.DeleteBackboneResponse:
        await self.broker.registry.delete(request.id)
        return registry_pb2.DeleteBackboneResponse()

    @unary()
    async def ListBackbones(
        self, request: registry_pb2.ListBackbonesRequest, p: Principal, context: Context
    ) -> registry_pb2.ListBackbonesResponse:
        records = await self.broker.registry.list()
        return registry_pb2.ListBackbonesResponse(backbones=[backbone_message(r) for r in records])
