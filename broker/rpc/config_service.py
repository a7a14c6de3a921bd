"""``ConfigService``: the config store (the broker's admin; see ``broker.configstore``)."""

from __future__ import annotations

from lockgate.broker.auth import Principal
from lockgate.broker.configstore import ConfigChange
from lockgate.broker.rpc import Context, Servicer, unary
from lockgate.broker.store import ConfigVersionRecord
from lockgate.broker.v1 import config_pb2

__all__ = ["ConfigService", "config_settings", "version_message"]


def version_message(rec: ConfigVersionRecord | None, running: int) -> config_pb2.ConfigVersion:
    if rec is None:
        return config_pb2.ConfigVersion(version=0, active=True)
    m = config_pb2.ConfigVersion(
        version=rec.version,
        author=rec.author,
        origin=rec.origin,
        detail=rec.detail,
        active=rec.version == running,
    )
    m.create_time.FromMilliseconds(rec.created_ms)
    return m


def config_settings(rec: ConfigVersionRecord | None) -> list[config_pb2.ConfigSetting]:
    """A version's settings, global ones first, then by pattern and name."""
    if rec is None:
        return []
    return [
        config_pb2.ConfigSetting(pattern=pattern, name=name, value=value)
        for pattern in sorted(rec.settings)
        for name, value in sorted(rec.settings[pattern].items())
    ]


class ConfigService(Servicer):
    """``ConfigService``: every call acts on the whole broker (the admin role)."""

    SERVICE = "broker.v1.ConfigService"
    BROKER_WIDE = True

    async def _running(self) -> int:
        newest = await self.broker.settings.get()
        return newest.version if newest is not None else 0

    @unary()
    async def GetConfig(
        self, request: config_pb2.GetConfigRequest, p: Principal, context: Context
    ) -> config_pb2.GetConfigResponse:
        rec = await self.broker.settings.get(request.version)
        running = rec.version if rec is not None and not request.version else await self._running()
        return config_pb2.GetConfigResponse(
            version=version_message(rec, running), settings=config_settings(rec)
        )

    @unary()
    async def SetConfig(
        self, request: config_pb2.SetConfigRequest, p: Principal, context: Context
    ) -> config_pb2.SetConfigResponse:
        changes = [ConfigChange(c.pattern, c.name, c.value, c.unset) for c in request.changes]
        rec = await self.broker.settings.set(changes, expected_version=request.expected_version)
        return config_pb2.SetConfigResponse(version=version_message(rec, rec.version))

    @unary()
    async def ListConfigVersions(
        self, request: config_pb2.ListConfigVersionsRequest, p: Principal, context: Context
    ) -> config_pb2.ListConfigVersionsResponse:
        versions = await self.broker.settings.versions(request.page_size or 100)
        running = versions[0].version if versions else 0
        return config_pb2.ListConfigVersionsResponse(
            versions=[version_message(v, running) for v in versions]
        )

    @unary()
    async def RollbackConfig(
        self, request: config_pb2.RollbackConfigRequest, p: Principal, context: Context
    ) -> config_pb2.RollbackConfigResponse:
        rec = await self.broker.settings.rollback(request.version)
        return config_pb2.RollbackConfigResponse(version=version_message(rec, rec.version))
