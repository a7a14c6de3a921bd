"""``lockgate backbones deploy|upgrade|remove`` (and ``BackboneDeployer``) against a real
``lockgate serve`` and the real helm binary. No Kubernetes cluster runs here: the dry runs
render the chart with helm on the client, and the real steps are run against a kube context
that does not exist, to show that a failed helm step records nothing in the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.clients import (
    AlreadyExists,
    Backbone,
    BackboneDeployer,
    Client,
    HelmError,
    InvalidArgument,
    NotFound,
)
from tests.support.tools import require_tool

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "nats-backbone"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm", "LOCKGATE_TEST_HELM")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker() -> AsyncIterator[RunningBroker]:
    async with run_broker() as b:
        yield b


def cli(broker: RunningBroker, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOCKGATE_SERVER": broker.target}
    return subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", "backbones", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def fresh_id() -> str:
    return f"bb-{uuid.uuid4().hex[:8]}"


async def test_a_dry_run_renders_the_chart_for_the_backbone_and_records_nothing(
    broker: RunningBroker, helm: str
) -> None:
    bid = fresh_id()
    done = cli(
        broker,
        "deploy",
        bid,
        "--dry-run",
        "--helm",
        helm,
        "--chart",
        str(CHART),
        "--org",
        "acme",
        "--set",
        "replicas=3",
        "--namespace",
        "nb",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["command"][1] == "template"
    docs = [d for d in yaml.safe_load_all(out["manifest"]) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    assert sts["metadata"]["labels"]["lockgate.dev/backbone"] == bid
    assert sts["metadata"]["name"] == f"lgbb-{bid}-nats-backbone"
    assert sts["spec"]["replicas"] == 3
    async with Client(broker.target) as c:
        with pytest.raises(NotFound):
            await c.admin.get_backbone(bid)


async def test_a_failed_helm_step_records_nothing(broker: RunningBroker, helm: str) -> None:
    bid = fresh_id()
    done = cli(
        broker,
        "deploy",
        bid,
        "--helm",
        helm,
        "--chart",
        str(CHART),
        "--kube-context",
        "no-such-context",
    )
    assert done.returncode != 0
    assert "helm install failed" in done.stderr and "no-such-context" in done.stderr
    assert "Traceback" not in done.stderr
    async with Client(broker.target) as c:
        with pytest.raises(NotFound):
            await c.admin.get_backbone(bid)


async def test_upgrade_and_remove_need_a_recorded_backbone_and_keep_it_on_failure(
    broker: RunningBroker, helm: str
) -> None:
    bid = fresh_id()
    async with Client(broker.target) as c:
        d = BackboneDeployer(c.admin, chart=CHART, helm=helm)
        with pytest.raises(InvalidArgument):
            await d.deploy(Backbone("Not_A_Label", ""), dry_run=True)
        with pytest.raises(NotFound):
            await d.upgrade(Backbone(bid, ""), kube_context="no-such-context")
        with pytest.raises(NotFound):
            await d.remove(bid, kube_context="no-such-context")
        await c.admin.create_backbone(Backbone(bid, "nats://eu.example:4222", ("acme",)))
        with pytest.raises(AlreadyExists):
            await d.deploy(Backbone(bid, ""), kube_context="no-such-context")
        plan = await d.upgrade(Backbone(bid, "", region="eu"), dry_run=True)
        assert f"lockgate.dev/backbone: {bid}" in plan.manifest.replace('"', "")
        with pytest.raises(HelmError):
            await d.upgrade(Backbone(bid, ""), kube_context="no-such-context")
        with pytest.raises(HelmError):
            await d.remove(bid, kube_context="no-such-context")
        dry = await d.remove(bid, dry_run=True)
        assert dry.command[1:3] == ("uninstall", f"lgbb-{bid}")
        kept = await c.admin.get_backbone(bid)
        assert kept.endpoint == "nats://eu.example:4222" and kept.org_ids == ("acme",)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("deploy", "EU_1", "--dry-run"), "cannot name a helm release"),
        (("deploy", "eu-x", "--dry-run", "--chart", "/nonexistent"), "is not a helm chart"),
        (("deploy", "eu-y", "--helm", "/nonexistent/helm"), "could not run /nonexistent/helm"),
        (("deploy", "eu-z", "--dry-run", "--set", "replicas"), "is not KEY=VALUE"),
        (("deploy", "eu-w", "--dry-run", "--set", "replicas=0"), "replicas must be at least 1"),
    ],
)
async def test_bad_input_is_one_sentence_and_changes_nothing(
    broker: RunningBroker, helm: str, args: tuple[str, ...], says: str
) -> None:
    extra = () if "--chart" in args else ("--chart", str(CHART))
    extra += () if "--helm" in args else ("--helm", helm)
    done = cli(broker, *args, *extra)
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    async with Client(broker.target) as c:
        assert not [b for b in await c.admin.list_backbones() if b.id == args[1]]
