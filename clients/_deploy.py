"""Backbones deployed, upgraded and removed with helm, and recorded in the backbone registry.

helm runs where the operator's kube context is (this process), not in the broker: the broker
never holds cluster credentials. Each step runs helm first and writes the registry only when
helm succeeded, so the registry never names a backbone that failed to deploy. ``dry_run``
renders the chart on the client (``helm template``: helm 3.17's ``install --dry-run=client``
still asks the cluster for its version) and writes nothing.

Example::

    async with Client(target, api_key=admin_key) as c:
        d = BackboneDeployer(c.admin, chart="deploy/helm/nats-backbone")
        plan = await d.deploy(Backbone("eu-1", "", ("acme",)), kube_context="prod-eu")
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lockgate.clients._cluster import Backbone, ClusterAdmin
from lockgate.clients._errors import AlreadyExists, FailedPrecondition, InvalidArgument

__all__ = ["BackboneDeployer", "Deployment", "HelmError"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
_OUTPUT_LIMIT = 64 << 20
"""Bytes of helm output read at most (a rendered chart is far smaller)."""


class HelmError(FailedPrecondition):
    """helm failed (or could not run); nothing was recorded in the registry."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """What a step did: the helm command it ran, helm's rendered manifest (a dry run) and the
    registry record written (None for a dry run or a removal)."""

    command: tuple[str, ...]
    manifest: str = ""
    record: Backbone | None = None


def release_name(backbone_id: str) -> str:
    """The helm release of a backbone (a DNS label: the chart names its Services after it)."""
    if not _NAME.match(backbone_id):
        raise InvalidArgument(
            f"backbone id {backbone_id!r} cannot name a helm release",
            hint="use 1-42 lowercase letters, digits and '-', starting and ending alphanumeric",
        )
    return f"lgbb-{backbone_id}"


class BackboneDeployer:
    """Runs ``helm`` against a kube context for the backbones of the registry."""

    def __init__(
        self,
        admin: ClusterAdmin,
        *,
        chart: str | Path = "deploy/helm/nats-backbone",
        helm: str = "helm",
        timeout: float = 600.0,
    ) -> None:
        self.admin = admin
        self.chart = Path(chart)
        self.helm = helm
        self.timeout = timeout

    def _chart(self) -> str:
        if not (self.chart / "Chart.yaml").is_file():
            raise InvalidArgument(
                f"{self.chart} is not a helm chart (no Chart.yaml)",
                hint="give --chart the path of deploy/helm/nats-backbone from Lockgate's sources",
            )
        return str(self.chart)

    def _args(
        self,
        verb: Sequence[str],
        backbone: Backbone,
        kube_context: str,
        namespace: str,
        values: Sequence[str],
    ) -> list[str]:
        args = [self.helm, *verb, release_name(backbone.id), self._chart()]
        args += ["--namespace", namespace, "--set-string", f"systemId={backbone.id}"]
        for v in values:
            if "=" not in v:
                raise InvalidArgument(f"{v!r} is not KEY=VALUE", hint="e.g. --set replicas=3")
            args += ["--set", v]
        if kube_context:
            args += ["--kube-context", kube_context]
        return args

    async def _run(self, args: Sequence[str]) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=_OUTPUT_LIMIT,
            )
        except OSError as exc:
            raise HelmError(
                f"could not run {args[0]}: {exc.strerror or exc}",
                hint="install helm 3 or give its path with --helm",
            ) from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise HelmError(f"helm did not finish within {self.timeout:g} s") from None
        if proc.returncode != 0:
            # helm's cause is its "Error: ..." line (advice such as "Use --debug" follows it).
            lines = err.decode(errors="replace").strip().splitlines()
            errors = [ln.removeprefix("Error: ") for ln in lines if ln.startswith("Error: ")]
            detail = (errors or lines or [f"exit status {proc.returncode}"])[0]
            raise HelmError(
                f"helm {args[1]} failed: {detail}",
                hint="nothing was recorded in the registry",
            )
        return out.decode(errors="replace")

    async def _exists(self, backbone_id: str) -> Backbone | None:
        for b in await self.admin.list_backbones():
            if b.id == backbone_id:
                return b
        return None

    async def _version(self) -> str:
        chart = (self.chart / "Chart.yaml").read_text()
        found = re.search(r'^appVersion:\s*"?([^"\n]+)"?', chart, re.M)
        return found.group(1).strip() if found else ""

    def _endpoint(self, backbone: Backbone, namespace: str) -> str:
        # The chart's client Service is named after the release and the chart.
        name = f"{release_name(backbone.id)}-nats-backbone"
        return backbone.endpoint or f"nats://{name}.{namespace}.svc:4222"

    async def deploy(
        self,
        backbone: Backbone,
        *,
        kube_context: str = "",
        namespace: str = "lockgate",
        values: Sequence[str] = (),
        dry_run: bool = False,
    ) -> Deployment:
        """Installs a new backbone and records it (refused when the registry has it)."""
        if await self._exists(backbone.id) is not None:
            raise AlreadyExists(
                f"backbone {backbone.id!r} is already in the registry",
                hint="upgrade it (lockgate backbones upgrade) or remove it first",
            )
        return await self._apply(
            ("install",), backbone, kube_context, namespace, values, dry_run, create=True
        )

    async def upgrade(
        self,
        backbone: Backbone,
        *,
        kube_context: str = "",
        namespace: str = "lockgate",
        values: Sequence[str] = (),
        dry_run: bool = False,
    ) -> Deployment:
        """Upgrades a backbone of the registry (its record keeps the fields not given)."""
        current = await self.admin.get_backbone(backbone.id)  # NotFound when unknown
        merged = dataclasses.replace(
            current,
            endpoint=backbone.endpoint or current.endpoint,
            org_ids=backbone.org_ids or current.org_ids,
            cluster_ids=backbone.cluster_ids or current.cluster_ids,
            region=backbone.region or current.region,
        )
        return await self._apply(
            ("upgrade",), merged, kube_context, namespace, values, dry_run, create=False
        )

    async def _apply(
        self,
        verb: tuple[str, ...],
        backbone: Backbone,
        kube_context: str,
        namespace: str,
        values: Sequence[str],
        dry_run: bool,
        *,
        create: bool,
    ) -> Deployment:
        if dry_run:
            # Rendered on the client: no kube context is consulted.
            args = self._args(("template",), backbone, "", namespace, values)
            return Deployment(tuple(args), manifest=await self._run(args))
        args = self._args(verb, backbone, kube_context, namespace, values)
        args += ["--wait", "--timeout", f"{int(self.timeout)}s", "-o", "json"]
        if verb == ("install",):
            args += ["--create-namespace"]
        status = json.loads(await self._run(args) or "{}")
        record = dataclasses.replace(
            backbone,
            endpoint=self._endpoint(backbone, namespace),
            version=str(status.get("chart", {}).get("metadata", {}).get("appVersion", ""))
            or await self._version(),
            status="active",
        )
        if create:
            record = await self.admin.create_backbone(record)
        else:
            record = await self.admin.update_backbone(record)
        return Deployment(tuple(args), record=record)

    async def remove(
        self,
        backbone_id: str,
        *,
        kube_context: str = "",
        namespace: str = "lockgate",
        dry_run: bool = False,
    ) -> Deployment:
        """Uninstalls a backbone of the registry and deletes its record (a dry run checks it
        is known and returns the command without running it)."""
        await self.admin.get_backbone(backbone_id)  # NotFound when unknown
        args = [self.helm, "uninstall", release_name(backbone_id), "--namespace", namespace]
        if kube_context:
            args += ["--kube-context", kube_context]
        args += ["--wait", "--timeout", f"{int(self.timeout)}s"]
        if dry_run:
            return Deployment(tuple(args))
        await self._run(args)
        await self.admin.delete_backbone(backbone_id)
        return Deployment(tuple(args))
