"""The policy sets' life: load at start, reload on file change, versions, put and roll back.

There is the global set (the operator's: ``--policy-dir`` or ``PutPolicies`` without an
org) and each org's own set (``PutPolicies`` with ``org``; see ``broker.orgpolicies`` for
how the two decide together). Every version the broker runs is kept in the store
(content-hashed, per set), so ``RollbackPolicies`` and ``ListPolicyVersions`` survive
restarts, and each stored batch records the versions that admitted it. A set that fails its
checks is refused whole; the running one stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from lockgate.broker.errors import BrokerError, InvalidArgument, NotFound
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store import PolicyVersionRecord, Store
from lockgate.policy import PolicyErrors, PolicySet, compile_policies
from lockgate.policy.files import new_parser, read_policy_dir

__all__ = ["PolicyInvalid", "PolicyManager"]

log = logging.getLogger("lockgate.policy")
_AUDITED = {"rpc": "policy.put", "rollback": "policy.rollback", "dir": "policy.reload"}
"""The audit log's action for a set applied from each origin (a restart changes nothing)."""


class PolicyInvalid(InvalidArgument):
    default_reason = "POLICY_INVALID"

    def __init__(self, rendered: str, count: int) -> None:
        super().__init__(
            f"the policy set has {count} error(s):\n{rendered}",
            hint="fix them and load the set again; a running broker keeps the set it has",
            metadata={"errors": str(count)},
        )


def _invalid(errs: PolicyErrors) -> PolicyInvalid:
    rendered = "\n".join(e.render() for e in errs.errors)
    return PolicyInvalid(rendered, max(1, len(errs.errors)))


def read_dir(path: str) -> dict[str, str]:
    """The ``*.policy`` files of the policy directory (see :func:`policy.files.read_policy_dir`)."""
    if not Path(path).is_dir():
        raise InvalidArgument(
            f"policy directory {path} does not exist",
            reason="INVALID_CONFIG",
            hint="create it or fix --policy-dir",
        )
    try:
        return read_policy_dir(path)
    except PolicyErrors as errs:
        raise _invalid(errs) from None


def _signature(path: str) -> tuple[tuple[str, float, int], ...]:
    root = Path(path)
    try:
        if not root.is_dir():
            return ()
        return tuple(
            (str(p), p.stat().st_mtime, p.stat().st_size) for p in sorted(root.rglob("*.policy"))
        )
    except OSError as exc:  # a file vanished between the listing and its stat, or no access
        return (("", 0.0, hash(str(exc))),)


def _refuse_empty(path: str, files: dict[str, str]) -> None:
    """Fails closed: a directory without ``*.policy`` files or an empty file (a rewrite
    caught half way) is not a policy set; only ``PutPolicies`` with no files means "none"."""
    if not files:
        raise InvalidArgument(
            f"policy directory {path} is missing, unreadable or has no *.policy files",
            reason="INVALID_CONFIG",
            hint="to run without policies, put an empty set with PutPolicies",
        )
    empty = sorted(name for name, text in files.items() if not text.strip())
    if empty:
        raise InvalidArgument(
            f"policy file(s) {', '.join(empty)} in {path} are empty",
            reason="INVALID_CONFIG",
            hint="write policy files atomically (a temporary file, then a rename)",
        )


def _refusal(err: BrokerError) -> dict[str, str]:
    return {"reason": err.reason, "message": err.message[:1000]}


class PolicyManager:
    """Owns the gate's policy set; ``compile`` is the only way a set gets in."""

    def __init__(self, gate: PolicyGate, store: Store, policy_dir: str = "") -> None:
        self.gate = gate
        self.store = store
        self.policy_dir = policy_dir
        self._sig: tuple[tuple[str, float, int], ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._parser = new_parser()  # built once; every reload and PutPolicies reuses it
        # One compile at a time (the parser is not shared between threads), and sets go in
        # in the order they were given.
        self._applying = asyncio.Lock()
        self._follow_task: asyncio.Task[None] | None = None
        self._nudged = asyncio.Event()
        self._org_loaded: dict[str, str] = {}

    def compile(self, files: dict[str, str]) -> PolicySet:
        try:
            return compile_policies(files, self._parser)
        except PolicyErrors as errs:
            raise _invalid(errs) from None

    async def start(self, reload_interval: float = 1.0) -> None:
        if self.policy_dir:
            self._sig = _signature(self.policy_dir)
            files = read_dir(self.policy_dir)
            try:
                _refuse_empty(self.policy_dir, files)
            except InvalidArgument as err:
                active = [v for v in await self.store.list_policy_versions() if v.active]
                if active:  # the last good set survives a restart too
                    self.gate.audit.record("policy.reload", "failed", detail=_refusal(err))
                    log.error(
                        "policy.reload.refused: %s; the stored set %s runs",
                        err.message,
                        active[0].version,
                    )
                    files = active[0].files
                elif files:  # an empty file and nothing to fall back on
                    raise
            await self.apply(files, "dir")
            self._task = asyncio.create_task(self._watch(reload_interval), name="policy-watch")
        else:
            active = [v for v in await self.store.list_policy_versions() if v.active]
            if active:
                await self.apply(active[0].files, "restart")
        for org, rec in sorted((await self.store.active_org_policies()).items()):
            try:
                self.gate.swap_org(org, self.compile(rec.files))
            except PolicyInvalid as err:  # fail closed: no start with an org's set missing
                raise PolicyInvalid(f"org {org!r}: {err.message}", 1) from None

    async def stop(self) -> None:
        for task in (self._task, self._follow_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def follow_store(self, interval: float = 1.0) -> None:
        """Cluster mode: the store is shared, and a set another node put or rolled back is
        its active version there. Loads the active versions when :meth:`nudge` d (a
        ``policy_swapped`` notice) and every ``interval`` (a lost notice costs a second)."""
        self._follow_task = asyncio.create_task(self._follow(interval), name="policy-follow")

    def nudge(self) -> None:
        self._nudged.set()

    async def _follow(self, interval: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), interval)
            self._nudged.clear()
            try:
                await self.load_active()
            except BrokerError as exc:  # the store is away: the running sets stay
                log.warning("policy.follow.failed: %s", exc.message)

    async def load_active(self) -> None:
        """Swaps in the store's active global and per-org versions where they differ from
        the running ones (nothing is stored or audited: the node that put them did)."""
        async with self._applying:
            active = [v for v in await self.store.list_policy_versions() if v.active]
            if active and active[0].version != self.gate.version:
                self.gate.swap(await asyncio.to_thread(self.compile, active[0].files))
                log.info(
                    "policy.running: policy set %s is running (from the store)", active[0].version
                )
            for org, rec in sorted((await self.store.active_org_policies()).items()):
                running = self.gate.org_policies.get(org)
                loaded = running.version if running is not None else self._org_loaded.get(org)
                if loaded != rec.version:
                    self.gate.swap_org(org, await asyncio.to_thread(self.compile, rec.files))
                    self._org_loaded[org] = rec.version  # an empty set runs as none
                    log.info(
                        "policy.org.running: policy set %s of org %s runs (from the store)",
                        rec.version,
                        org,
                    )

    async def apply(
        self, files: dict[str, str], origin: str, *, validate_only: bool = False, org: str = ""
    ) -> PolicySet:
        """Compiles ``files`` and, unless ``validate_only``, swaps them in as the global set
        (or as ``org``'s own); returns the set.

        Compiling runs in a worker thread: a 1 MiB set takes seconds of CPU, and on the event
        loop it held every publish that long. The running set decides until the swap, one
        attribute store on the loop (policies are pure: the compiled set shares nothing).
        A change or a refused one is recorded in the audit log, as the caller in context
        (an org's set: ``org`` in its detail, ``ORG:VERSION`` as its target)."""
        async with self._applying:
            return await self._apply(files, origin, validate_only, org)

    async def _apply(
        self, files: dict[str, str], origin: str, validate_only: bool, org: str = ""
    ) -> PolicySet:
        action = "" if validate_only else _AUDITED.get(origin, "")
        scope = {"org": org} if org else {}
        try:
            ps = await asyncio.to_thread(self.compile, files)
        except PolicyInvalid as err:
            if action:
                self.gate.audit.record(action, "failed", detail={**_refusal(err), **scope})
            raise
        if not validate_only:
            previous = self.gate.version
            record = PolicyVersionRecord(
                ps.version,
                int(time.time() * 1000),
                origin,
                dict(files),
            )
            await self.store.save_policy_version(record, activate=True, org=org)
            if org:
                previous = self.gate.version_of(org)
                self.gate.swap_org(org, ps)
            else:
                self.gate.swap(ps)
            log.info(
                "policy.running: policy set %s is running (%s%s, %d files)",
                record.version,
                origin,
                f", org {org}" if org else "",
                len(files),
            )
            if action:
                detail = {"previous": previous, "files": ",".join(sorted(files))[:1000], **scope}
                target = f"{org}:{ps.version}" if org else ps.version
                self.gate.audit.record(action, target=target, detail=detail)
        return ps

    async def versions(self, org: str = "") -> list[PolicyVersionRecord]:
        return await self.store.list_policy_versions(org)

    async def rollback(self, version: str, org: str = "") -> PolicyVersionRecord:
        versions = await self.versions(org)
        if not version:
            older = [v for v in versions if not v.active]
            if not older:
                raise NotFound("there is no earlier policy version", reason="UNKNOWN_VERSION")
            target = older[0]
        else:
            found = [v for v in versions if v.version == version]
            if not found:
                self.gate.audit.record(
                    "policy.rollback", "failed", target=f"{org}:{version}" if org else version
                )
                raise NotFound(
                    f"policy version {version!r} does not exist",
                    reason="UNKNOWN_VERSION",
                    hint="list them with ListPolicyVersions",
                )
            target = found[0]
        await self.apply(target.files, "rollback", org=org)
        return target

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            sig = _signature(self.policy_dir)
            if sig == self._sig:
                continue
            self._sig = sig
            try:
                files = await asyncio.to_thread(read_dir, self.policy_dir)  # a file read
                _refuse_empty(self.policy_dir, files)
                await self.apply(files, "dir")
            except InvalidArgument as err:
                log.error(
                    "policy.reload.refused: policy reload refused, the running set stays: %s",
                    err.message,
                )
                if not isinstance(err, PolicyInvalid):  # apply recorded those
                    self.gate.audit.record("policy.reload", "failed", detail=_refusal(err))
            except OSError as exc:  # the watcher never dies: a dead one would freeze the set
                log.error(
                    "policy.reload.refused: policy reload refused, the running set stays: %s",
                    exc,
                )
                self.gate.audit.record("policy.reload", "failed", detail={"message": str(exc)})
