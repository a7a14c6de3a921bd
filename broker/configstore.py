"""The config store's life on one node: read, change, roll back, and follow other nodes.

Every change is a new version in the store (``broker.store.ConfigStore``), numbered one
above the running one; two nodes changing at once cannot both take a number, so the loser
reads the newest and applies its change on top (or, with ``expected_version``, is refused).
A document is checked whole before it is stored (``broker.livesettings.check_settings``),
so a stored version always applies. The node swaps a new version into its
:class:`~broker.livesettings.LiveSettings` when it makes it, when another node's
``config_changed`` notice arrives, and on a poll every second (the safety net behind a lost
notice). Changes and refusals are recorded in the audit log (``config.set``,
``config.rollback``).

Example::

    version = await manager.set([ConfigChange("orders.>", "publish_rate", "10")])
    await manager.rollback(version.version - 1)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lockgate.broker.actor import current_actor
from lockgate.broker.audit import AuditLog
from lockgate.broker.errors import BrokerError, FailedPrecondition, InvalidArgument, NotFound
from lockgate.broker.livesettings import LiveSettings, check_settings
from lockgate.broker.store import ConfigStore, ConfigVersionRecord

__all__ = ["ConfigChange", "ConfigManager"]

log = logging.getLogger("lockgate.config")
_TRIES = 20
_MAX_CHANGES = 1000


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Set ``name`` to ``value`` in ``pattern``'s scope (``""``: global), or ``unset`` it."""

    pattern: str
    name: str
    value: str = ""
    unset: bool = False


def _applied(
    settings: Mapping[str, Mapping[str, str]], changes: Sequence[ConfigChange]
) -> dict[str, dict[str, str]]:
    out = {p: dict(s) for p, s in settings.items()}
    for c in changes:
        if c.unset:
            scope = out.get(c.pattern, {})
            scope.pop(c.name, None)
            if not scope:
                out.pop(c.pattern, None)
        else:
            out.setdefault(c.pattern, {})[c.name] = c.value.strip()
    return out


def _summary(changes: Sequence[ConfigChange]) -> str:
    parts = [
        f"{c.pattern or '(global)'}: {c.name}" + (" unset" if c.unset else f"={c.value.strip()}")
        for c in changes
    ]
    return "; ".join(parts)[:1000]


def _author() -> str:
    a = current_actor()
    return f"{a.org}/{a.agent}" if a.org or a.agent else a.surface


class ConfigManager:
    """The config store of one node: :meth:`set`, :meth:`rollback`, :meth:`get`,
    :meth:`versions`, and :meth:`reload` (the notice and the poll call it)."""

    def __init__(
        self,
        store: ConfigStore,
        live: LiveSettings,
        audit: AuditLog,
        changed: Callable[[int], None],
    ) -> None:
        self.store = store
        self.live = live
        self.audit = audit
        self._changed = changed
        """Called with the new version after this node made one (the node tells the others)."""
        self.on_swap: list[Callable[[int], None]] = []
        """Called with the version after every swap, from this node or another."""

    async def reload(self) -> bool:
        """Swaps in the newest stored version when it is not the running one; whether it did.
        A stored version that no longer checks (written by a newer Lockgate with settings
        this one does not know) is logged and skipped: the running one stays."""
        rec = await self.store.config_version()
        if rec is None or rec.version == self.live.version:
            return False
        try:
            values = check_settings(rec.settings)
        except BrokerError as err:
            if self.live.version != -rec.version:
                log.error("config.reload.refused: version %d: %s", rec.version, err.message)
            self.live.version = -rec.version  # logged once
            return False
        self._swap(values, rec.version)
        log.info(
            "config.running: config version %d is running (%s)",
            rec.version,
            rec.detail or rec.origin,
        )
        return True

    def _swap(self, values: dict[str, dict[str, float]], version: int) -> None:
        if version < self.live.version:
            return  # a newer one is running already (two changes of this node crossed)
        self.live.swap(values, version)
        for hook in list(self.on_swap):
            hook(version)

    async def get(self, version: int = 0) -> ConfigVersionRecord | None:
        """The version ``version`` (0: the running one; None before the first change)."""
        if version < 0:
            raise NotFound(f"config version {version} does not exist", reason="UNKNOWN_VERSION")
        rec = await self.store.config_version(version)
        if rec is None and version:
            raise NotFound(
                f"config version {version} does not exist",
                reason="UNKNOWN_VERSION",
                hint="list them with `lockgate config history`",
            )
        return rec

    async def versions(self, limit: int = 100) -> list[ConfigVersionRecord]:
        return await self.store.list_config_versions(min(max(limit, 1), 1000))

    async def set(
        self, changes: Sequence[ConfigChange], *, expected_version: int = 0
    ) -> ConfigVersionRecord:
        """Applies ``changes`` to the newest version and stores the result as the next one;
        refused whole (INVALID_SETTING naming the setting) when a value does not check."""
        if not changes:
            raise InvalidArgument("no setting to change", hint="name at least one setting")
        if len(changes) > _MAX_CHANGES:
            raise InvalidArgument(f"more than {_MAX_CHANGES} changes in one call")
        summary = _summary(changes)
        for _ in range(_TRIES):
            current = await self.store.config_version()
            number = current.version if current is not None else 0
            if expected_version and expected_version != number:
                err = FailedPrecondition(
                    f"the running config version is {number}, not {expected_version}",
                    hint="read it again (lockgate config get) and repeat the change",
                    metadata={"version": str(number)},
                )
                self.audit.record("config.set", "failed", detail=_refusal(err, summary))
                raise err
            doc = _applied(current.settings if current is not None else {}, changes)
            try:
                values = check_settings(doc)
            except BrokerError as err:
                self.audit.record("config.set", "failed", detail=_refusal(err, summary))
                raise
            rec = ConfigVersionRecord(
                number + 1, int(time.time() * 1000), _author(), "set", doc, summary
            )
            if await self.store.add_config_version(rec):
                self._made(rec, values)
                return rec
        raise FailedPrecondition(
            "the config store changed under this change too often", hint="try again"
        )

    async def rollback(self, version: int = 0) -> ConfigVersionRecord:
        """Stores the settings of ``version`` (0: the one before the running one; before
        version 1, nothing was set) as a new version."""
        for _ in range(_TRIES):
            current = await self.store.config_version()
            number = current.version if current is not None else 0
            want = version or number - 1
            if want == 0 and number > 0:  # before the first version: nothing was set
                old: ConfigVersionRecord | None = ConfigVersionRecord(0, 0, "", "", {})
            else:
                old = await self.store.config_version(want) if want > 0 else None
            if old is None or want >= number + 1:
                self.audit.record(
                    "config.rollback", "failed", target=str(version or want), detail={}
                )
                raise NotFound(
                    f"config version {want} does not exist"
                    if version
                    else "there is no earlier config version",
                    reason="UNKNOWN_VERSION",
                    hint="list them with `lockgate config history`",
                )
            values = check_settings(old.settings)
            rec = ConfigVersionRecord(
                number + 1,
                int(time.time() * 1000),
                _author(),
                "rollback",
                old.settings,
                f"rollback to {old.version}",
            )
            if await self.store.add_config_version(rec):
                self._made(rec, values)
                return rec
        raise FailedPrecondition(
            "the config store changed under this rollback too often", hint="try again"
        )

    def _made(self, rec: ConfigVersionRecord, values: dict[str, dict[str, float]]) -> None:
        self._swap(values, rec.version)
        action = "config.rollback" if rec.origin == "rollback" else "config.set"
        self.audit.record(
            action, target=str(rec.version), detail={"change": rec.detail, "origin": rec.origin}
        )
        log.info("config.running: config version %d is running (%s)", rec.version, rec.detail)
        self._changed(rec.version)


def _refusal(err: BrokerError, summary: str) -> dict[str, str]:
    detail = {"reason": err.reason, "message": err.message[:500], "change": summary}
    if "setting" in err.metadata:
        detail["setting"] = err.metadata["setting"]
    return detail
