"""The backbone registry on one node: checked writes, the org -> backbone lookup, news.

A record per backbone (``broker.store.BackboneRecord``) names the orgs whose subjects it
carries; an org is pinned to one backbone at most, and an org that no record names uses the
node's own backbone (``--backbone``): :meth:`BackboneRegistry.backbone_for`. The node keeps
the records in memory and reloads them when it changes one, when another node's
``registry_changed`` notice arrives, and on a poll every second; ``on_change`` listeners
(the multi-backbone routing) hear of every change. Writes and refused writes are recorded in
the audit log (``registry.create``, ``registry.update``, ``registry.delete``). An endpoint's
credentials are stored and used, never shown: reads, refusals and the audit log carry
:func:`shown_endpoint`, and an update that sends the endpoint as it reads back keeps them.

Example::

    await registry.create(BackboneRecord("eu-1", "nats://eu.example:4222", orgs=("acme",)))
    registry.backbone_for("acme").endpoint     # "nats://eu.example:4222"
    registry.backbone_for("globex")            # None: the node's own backbone
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from lockgate.broker.audit import AuditLog
from lockgate.broker.errors import (
    AlreadyExists,
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from lockgate.broker.redaction import REDACTED, kept_url, shown_url
from lockgate.broker.store import BackboneRecord, RegistryConflict, RegistryStore

__all__ = [
    "STATUSES",
    "BackboneRegistry",
    "RegistryFollower",
    "check_backbone",
    "shown_endpoint",
]

log = logging.getLogger("lockgate.registry")
STATUSES = ("active", "degraded", "maintenance", "down")
"""The operational statuses a backbone record may have."""
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_NAMES = 1000
_MAX_ENDPOINT = 1000


@runtime_checkable
class RegistryFollower(Protocol):
    """A part that routes orgs over the backbones the registry pins them to (the cluster
    store's log, the cluster backbone): told the pins at start and after every change."""

    def follow_pins(self, pins: Mapping[str, BackboneRecord]) -> None: ...


shown_endpoint = shown_url
"""A backbone endpoint as the registry shows it (reads, refusals, the audit log): the one
rule for stored URLs, :func:`lockgate.broker.redaction.shown_url`."""


def _shown(rec: BackboneRecord) -> BackboneRecord:
    return dataclasses.replace(rec, endpoint=shown_endpoint(rec.endpoint))


def _bad(field: str, message: str, hint: str) -> InvalidArgument:
    return InvalidArgument(message, hint=hint, metadata={"field": field})


def check_backbone(rec: BackboneRecord) -> BackboneRecord:
    """``rec`` with its defaults (status ``active``), once every field checks; raises
    INVALID_ARGUMENT naming the field."""
    if not _ID.fullmatch(rec.id):
        raise _bad(
            "id",
            f"backbone id {rec.id[:80]!r} is invalid",
            "use 1-64 letters, digits, '-', '_', '.'",
        )
    url = urlsplit(rec.endpoint)
    try:
        port = url.port
    except ValueError:
        port = None
    if (
        url.scheme not in ("nats", "tls")
        or not url.hostname
        or port is None
        or url.path not in ("", "/")
        or url.query
        or url.fragment
        or len(rec.endpoint) > _MAX_ENDPOINT
    ):
        # The refusal repeats the endpoint without its credentials (it may carry a token).
        shown = shown_endpoint(rec.endpoint[:200])
        raise _bad(
            "endpoint",
            f"backbone endpoint {shown!r} is not a nats:// or tls:// HOST:PORT URL",
            "e.g. nats://nats.eu.example:4222",
        )
    if REDACTED in rec.endpoint:
        raise _bad(
            "endpoint",
            f"backbone endpoint {shown_endpoint(rec.endpoint)!r} has {REDACTED} for credentials",
            "give the credentials in full (an update that keeps the host and port may send "
            "the endpoint as it reads back: the stored credentials stay)",
        )
    for field, names in (("org_ids", rec.orgs), ("cluster_ids", rec.clusters)):
        if len(names) > _MAX_NAMES:
            raise _bad(field, f"more than {_MAX_NAMES} {field}", "split the backbone's orgs")
        for name in names:
            if not _NAME.fullmatch(name):
                raise _bad(
                    field,
                    f"{field} entry {name[:80]!r} is invalid",
                    "use 1-128 letters, digits, '-', '_', '.'",
                )
        if len(set(names)) != len(names):
            raise _bad(field, f"{field} names an entry twice", "name each once")
    status = rec.status or "active"
    if status not in STATUSES:
        raise _bad(
            "status", f"backbone status {status[:40]!r} is not one of {', '.join(STATUSES)}", ""
        )
    for field in ("region", "version"):
        value = getattr(rec, field)
        if len(value) > 128 or not value.isprintable():
            raise _bad(
                field, f"backbone {field} is longer than 128 characters or not printable", ""
            )
    return dataclasses.replace(rec, status=status)


def _conflict(conflict: RegistryConflict, rec: BackboneRecord) -> BrokerError:
    if conflict.kind == "exists":
        return AlreadyExists(
            f"backbone {rec.id!r} exists already",
            hint="update it (lockgate backbones update), or choose another id",
        )
    if conflict.kind == "missing":
        return _unknown(rec.id)
    return FailedPrecondition(
        f"org {conflict.org!r} is served by backbone {conflict.backbone!r} already",
        hint=f"remove it from {conflict.backbone!r} first: an org is pinned to one backbone",
        metadata={"org": conflict.org, "backbone": conflict.backbone},
    )


def _unknown(backbone_id: str) -> NotFound:
    return NotFound(
        f"backbone {backbone_id[:80]!r} does not exist",
        hint="list them with `lockgate backbones list`",
    )


def _detail(rec: BackboneRecord) -> dict[str, str]:
    return {
        "endpoint": shown_endpoint(rec.endpoint),
        "orgs": ",".join(rec.orgs)[:1000],
        "clusters": ",".join(rec.clusters)[:1000],
        "region": rec.region,
        "version": rec.version,
        "status": rec.status,
    }


class BackboneRegistry:
    """The registry's records as this node knows them, and the checked writes."""

    def __init__(
        self, store: RegistryStore, audit: AuditLog, changed: Callable[[str], None]
    ) -> None:
        self.store = store
        self.audit = audit
        self._changed = changed
        """Called with the id after this node changed a record (the node tells the others)."""
        self.on_change: list[Callable[[], None]] = []
        """Called after the records this node knows changed (its own write or another's)."""
        self._records: dict[str, BackboneRecord] = {}
        self._by_org: dict[str, BackboneRecord] = {}

    def backbone_for(self, org: str) -> BackboneRecord | None:
        """The backbone ``org`` is pinned to; None: the node's own (default) backbone."""
        return self._by_org.get(org)

    def pinned(self) -> dict[str, BackboneRecord]:
        """Every pinned org and its backbone's record."""
        return dict(self._by_org)

    def routes_with(self, follower: RegistryFollower) -> None:
        """Tells ``follower`` the pins now and after every change."""
        follower.follow_pins(self.pinned())
        self.on_change.append(lambda: follower.follow_pins(self.pinned()))

    @property
    def records(self) -> list[BackboneRecord]:
        return list(self._records.values())

    async def reload(self) -> bool:
        """Reads every record; whether anything changed (then ``on_change`` ran)."""
        records = {r.id: r for r in await self.store.list_backbones()}
        if records == self._records:
            return False
        self._records = records
        self._by_org = {org: r for r in records.values() for org in r.orgs}
        for hook in list(self.on_change):
            try:
                hook()
            except Exception:  # one listener's bug must not stop the others or the poll
                log.exception("registry.listener.failed")
        return True

    async def get(self, backbone_id: str) -> BackboneRecord:
        """The record as an admin reads it (its endpoint as :func:`shown_endpoint`)."""
        rec = await self.store.get_backbone(backbone_id)
        if rec is None:
            raise _unknown(backbone_id)
        return _shown(rec)

    async def list(self) -> list[BackboneRecord]:
        """Every record as an admin reads it (endpoints as :func:`shown_endpoint`)."""
        return [_shown(r) for r in await self.store.list_backbones()]

    async def create(self, rec: BackboneRecord) -> BackboneRecord:
        return await self._put(rec, create=True)

    async def update(self, rec: BackboneRecord) -> BackboneRecord:
        return await self._put(rec, create=False)

    async def _put(self, rec: BackboneRecord, *, create: bool) -> BackboneRecord:
        action = "registry.create" if create else "registry.update"
        try:
            if not create:
                rec = await self._with_credentials(rec)
            rec = check_backbone(rec)
            conflict = await self.store.put_backbone(rec, create=create)
            if conflict is not None:
                raise _conflict(conflict, rec)
        except BrokerError as err:
            detail = {"reason": err.reason, "message": err.message[:500]}
            self.audit.record(action, "failed", target=rec.id[:80], detail=detail)
            raise
        self.audit.record(action, target=rec.id, detail=_detail(rec))
        await self._made(rec.id)
        return await self.get(rec.id)

    async def _with_credentials(self, rec: BackboneRecord) -> BackboneRecord:
        """``rec`` with the stored endpoint when it sends that endpoint as it reads back (a
        read-modify-write such as ``lockgate backbones update`` keeps the credentials)."""
        current = await self.store.get_backbone(rec.id)
        if current is None:
            return rec
        return dataclasses.replace(rec, endpoint=kept_url(rec.endpoint, current.endpoint))

    async def delete(self, backbone_id: str) -> None:
        if not await self.store.delete_backbone(backbone_id):
            self.audit.record("registry.delete", "failed", target=backbone_id[:80])
            raise _unknown(backbone_id)
        self.audit.record("registry.delete", target=backbone_id)
        await self._made(backbone_id)

    async def _made(self, backbone_id: str) -> None:
        await self.reload()
        self._changed(backbone_id)
