"""One place that turns the backend settings into the parts a node runs on.

``store``, ``backbone`` and ``limiter`` (see :class:`broker.config.Config`) each name the
embedded default or a cluster service by URL. :func:`build_backends` builds them, with the
dedup window and the leases that go with the limiter. A cluster value whose package is not
installed names the extra to install; a partial cluster is refused in one sentence, as a
configuration error rather than a failure at the first publish.

Example::

    b = build_backends(config)
    gate = PolicyGate(limiter=b.limiter)
    broker = Broker(config, b.store, gate, dedup=b.dedup, backbone=b.backbone, leases=b.leases)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from lockgate.broker.backbone import Backbone
from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.dedup import DedupWindow, MemoryDedupWindow
from lockgate.broker.dedup_redis import RedisDedupWindow
from lockgate.broker.extras import missing_extra
from lockgate.broker.leases import Leases, LocalLeases, RedisLeases
from lockgate.broker.limits import Limiter, LocalLimiter, RedisLimiter
from lockgate.broker.store import Store

__all__ = [
    "Backends",
    "build_backends",
    "build_limiter",
    "build_shared",
    "build_store",
    "check_mix",
    "cluster_mode",
]


@dataclass(slots=True)
class Backends:
    """What one node runs on; :meth:`close` releases what the node does not close itself
    (the node opens and closes its store)."""

    store: Store
    backbone: Backbone
    limiter: Limiter
    leases: Leases
    dedup: DedupWindow

    async def open(self) -> None:
        await self.backbone.open()

    async def close(self) -> None:
        await self.backbone.close()
        await self.leases.close()
        await self.limiter.close()


def _require(module: str, what: str) -> None:
    """Fails with a sentence naming the extra when ``module`` is not installed."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(what, exc) from None


def cluster_mode(config: Config) -> bool:
    """Cluster mode: the NATS backbone, the PostgreSQL store and the Redis limiter, all
    three (checked by :func:`check_mix`)."""
    return config.backbone != "local" and config.store != "sqlite" and config.limiter != "local"


def check_mix(config: Config) -> None:
    """Refuses a partial cluster: a NATS backbone or a PostgreSQL store without the other
    two (a Redis limiter alone shares limits between embedded nodes, as before)."""
    if (config.backbone == "local" and config.store == "sqlite") or cluster_mode(config):
        return
    missing = [
        f"{name} = {shape}"
        for name, shape, unset in (
            ("backbone", "nats://HOST:4222", config.backbone == "local"),
            ("store", "postgresql://USER@HOST/DB", config.store == "sqlite"),
            ("limiter", "redis://HOST:6379/0", config.limiter == "local"),
        )
        if unset
    ]
    given = "backbone" if config.backbone != "local" else "store"
    raise ConfigError(
        f"{given} = {getattr(config, given)!r} needs cluster mode, which also needs "
        f"{' and '.join(missing)}: the nodes share the log (NATS JetStream), their state "
        "(PostgreSQL) and their limits, dedup window and leases (Redis), all three",
        hint="set backbone, store and limiter together (README, Running a cluster), or "
        "none of backbone and store for the embedded broker",
    )


def build_store(config: Config) -> Store:
    if config.store == "sqlite":
        from lockgate.broker.store.sqlite import SqliteStore

        return SqliteStore(config.data_dir, fsync=config.fsync)
    _require("asyncpg", "the PostgreSQL store")
    _require("nats", "the NATS backbone")
    from lockgate.broker.store.cluster import ClusterStore
    from lockgate.broker.store.jetstream import JetStreamLog

    log = JetStreamLog(
        config.backbone,
        stream=config.backbone_stream,
        root=f"{config.backbone_prefix}log",
        replicas=config.backbone_replicas,
    )
    return ClusterStore(config.store, log)


def build_backbone(config: Config) -> Backbone:
    if config.backbone == "local":
        return LocalBackbone()
    _require("nats", "the NATS backbone")
    from lockgate.broker.backbone.nats import NatsBackbone
    from lockgate.broker.backbone.routed import RoutedBackbone

    # Orgs the registry pins elsewhere travel over their backbone, made the same way.
    return RoutedBackbone(
        NatsBackbone(config.backbone, prefix=config.backbone_prefix),
        lambda url: NatsBackbone(url, prefix=config.backbone_prefix),
    )


def build_limiter(config: Config) -> Limiter:
    if config.limiter == "local":
        return LocalLimiter()
    _require("redis", "the Redis limiter")
    return RedisLimiter(config.limiter, prefix=config.limiter_prefix)


def build_backends(config: Config) -> Backends:
    """The backends ``config`` names (validated by :func:`broker.config_load.load_config`)."""
    for name, module, what in (
        ("store", "asyncpg", "the PostgreSQL store"),
        ("backbone", "nats", "the NATS backbone"),
        ("limiter", "redis", "the Redis limiter"),
    ):
        if getattr(config, name) not in ("sqlite", "local"):
            _require(module, what)
    check_mix(config)
    store = build_store(config)
    backbone = build_backbone(config)
    leases, dedup = build_shared(config)
    return Backends(
        store=store,
        backbone=backbone,
        limiter=build_limiter(config),
        leases=leases,
        dedup=dedup,
    )


def build_shared(config: Config) -> tuple[Leases, DedupWindow]:
    """The leases and the dedup window follow the limiter: in this process with the local
    one, shared in Redis with a Redis one (Redis down already fails publishes closed, so
    they add no new way to fail)."""
    if config.limiter == "local":
        window = MemoryDedupWindow(config.dedup_window, max_bytes=config.dedup_max_bytes)
        return LocalLeases(), window
    prefix = config.limiter_prefix
    return (
        RedisLeases(config.limiter, prefix=prefix),
        RedisDedupWindow(config.limiter, config.dedup_window, prefix=prefix),
    )
