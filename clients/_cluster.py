"""``client.admin`` for the cluster's metadata: the backbone registry and the config store,
in the client's own types (the broker's ``admin`` role).

Example::

    async with Client(target, api_key=admin_key) as c:
        await c.admin.create_backbone(Backbone("eu-1", "nats://eu.example:4222", ("acme",)))
        v = await c.admin.set_config([ConfigChange("orders.>", "publish_rate", "100")])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message as _Message

from lockgate.broker.v1 import config_pb2, registry_pb2
from lockgate.clients._admin_models import time_of

__all__ = ["Backbone", "ClusterAdmin", "ConfigChange", "ConfigSetting", "ConfigVersion"]

REGISTRY = "/broker.v1.RegistryService/"
CONFIG = "/broker.v1.ConfigService/"
_R = TypeVar("_R", bound=_Message)


_EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)


@dataclass(frozen=True, slots=True)
class Backbone:
    """One record of the backbone registry: the orgs whose subjects it carries (each org on
    one backbone at most), the clusters it serves, its public endpoint, and metadata."""

    id: str
    endpoint: str
    org_ids: tuple[str, ...] = ()
    cluster_ids: tuple[str, ...] = ()
    region: str = ""
    version: str = ""
    status: str = "active"
    """active, degraded, maintenance or down."""
    created_time: dt.datetime = _EPOCH
    """Set by the broker."""
    updated_time: dt.datetime = _EPOCH

    @classmethod
    def _of(cls, m: registry_pb2.Backbone) -> Backbone:
        return cls(
            m.id,
            m.endpoint,
            tuple(m.org_ids),
            tuple(m.cluster_ids),
            m.region,
            m.version,
            m.status,
            time_of(m.create_time),
            time_of(m.update_time),
        )

    def _message(self) -> registry_pb2.Backbone:
        return registry_pb2.Backbone(
            id=self.id,
            endpoint=self.endpoint,
            org_ids=list(self.org_ids),
            cluster_ids=list(self.cluster_ids),
            region=self.region,
            version=self.version,
            status=self.status,
        )


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Set ``name`` to ``value`` for ``pattern`` (``""``: globally), or ``unset`` it."""

    pattern: str
    name: str
    value: str = ""
    unset: bool = False


@dataclass(frozen=True, slots=True)
class ConfigSetting:
    """One setting of a config version: ``pattern`` ``""`` for a global one."""

    pattern: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One version of the config store, and with :meth:`ClusterAdmin.get_config` its
    settings."""

    version: int
    """0 before the first change."""
    created_time: dt.datetime
    author: str
    origin: str
    """set or rollback."""
    detail: str
    active: bool
    settings: list[ConfigSetting] = field(default_factory=list)

    @classmethod
    def _of(
        cls, m: config_pb2.ConfigVersion, settings: Sequence[config_pb2.ConfigSetting] = ()
    ) -> ConfigVersion:
        return cls(
            m.version,
            time_of(m.create_time),
            m.author,
            m.origin,
            m.detail,
            m.active,
            [ConfigSetting(s.pattern, s.name, s.value) for s in settings],
        )


class ClusterAdmin:
    """The registry and config store calls; :class:`~clients.Admin` has them all."""

    _unary: Callable[..., Awaitable[_Message]]

    async def _cluster_call(self, method: str, request: _Message, response_type: type[_R]) -> _R:
        response = await self._unary(method, request, response_type)
        assert isinstance(response, response_type)
        return response

    # -- the backbone registry ----------------------------------------------------------------

    async def list_backbones(self) -> list[Backbone]:
        """Every record of the registry, by id."""
        r = await self._cluster_call(
            REGISTRY + "ListBackbones",
            registry_pb2.ListBackbonesRequest(),
            registry_pb2.ListBackbonesResponse,
        )
        return [Backbone._of(b) for b in r.backbones]

    async def get_backbone(self, backbone_id: str) -> Backbone:
        """One record; :class:`~clients.NotFound` for an unknown id."""
        r = await self._cluster_call(
            REGISTRY + "GetBackbone",
            registry_pb2.GetBackboneRequest(id=backbone_id),
            registry_pb2.GetBackboneResponse,
        )
        return Backbone._of(r.backbone)

    async def create_backbone(self, backbone: Backbone) -> Backbone:
        """Adds a record (its times are set by the broker)."""
        r = await self._cluster_call(
            REGISTRY + "CreateBackbone",
            registry_pb2.CreateBackboneRequest(backbone=backbone._message()),
            registry_pb2.CreateBackboneResponse,
        )
        return Backbone._of(r.backbone)

    async def update_backbone(self, backbone: Backbone) -> Backbone:
        """Replaces the fields of the record ``backbone.id``."""
        r = await self._cluster_call(
            REGISTRY + "UpdateBackbone",
            registry_pb2.UpdateBackboneRequest(backbone=backbone._message()),
            registry_pb2.UpdateBackboneResponse,
        )
        return Backbone._of(r.backbone)

    async def delete_backbone(self, backbone_id: str) -> None:
        await self._cluster_call(
            REGISTRY + "DeleteBackbone",
            registry_pb2.DeleteBackboneRequest(id=backbone_id),
            registry_pb2.DeleteBackboneResponse,
        )

    # -- the config store ---------------------------------------------------------------------

    async def get_config(self, version: int = 0) -> ConfigVersion:
        """The running version (or ``version``) with its settings."""
        r = await self._cluster_call(
            CONFIG + "GetConfig",
            config_pb2.GetConfigRequest(version=version),
            config_pb2.GetConfigResponse,
        )
        return ConfigVersion._of(r.version, r.settings)

    async def set_config(
        self, changes: Sequence[ConfigChange], *, expected_version: int = 0
    ) -> ConfigVersion:
        """Applies ``changes`` together as a new version; a bad value raises
        :class:`~clients.InvalidArgument` (reason ``INVALID_SETTING``) naming the setting."""
        request = config_pb2.SetConfigRequest(
            changes=[
                config_pb2.ConfigChange(
                    pattern=c.pattern, name=c.name, value=c.value, unset=c.unset
                )
                for c in changes
            ],
            expected_version=expected_version,
        )
        r = await self._cluster_call(CONFIG + "SetConfig", request, config_pb2.SetConfigResponse)
        return ConfigVersion._of(r.version)

    async def list_config_versions(self, limit: int = 100) -> list[ConfigVersion]:
        """The versions, newest first."""
        r = await self._cluster_call(
            CONFIG + "ListConfigVersions",
            config_pb2.ListConfigVersionsRequest(page_size=limit),
            config_pb2.ListConfigVersionsResponse,
        )
        return [ConfigVersion._of(v) for v in r.versions]

    async def rollback_config(self, version: int = 0) -> ConfigVersion:
        """Makes the settings of ``version`` (0: the one before the running one) a new
        version."""
        r = await self._cluster_call(
            CONFIG + "RollbackConfig",
            config_pb2.RollbackConfigRequest(version=version),
            config_pb2.RollbackConfigResponse,
        )
        return ConfigVersion._of(r.version)
