"""The backbone registry and the config store against a real ``lockgate serve``: over gRPC
(raw stubs), HTTP (the in-process gateway) and the CLI, every rejection path, the audit log,
and a live change of a rate limit observed on the next publishes without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    config_pb2,
    config_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.broker.e2e_kit import LOCKGATE, Metadata, auth, error_info, event
from tests.broker.test_e2e_audit import free_port
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

WHO = {
    "admin": ("default", "ops", ("admin",)),
    "legacy-admin": ("evil", "boss", ("admin",)),  # an org's admin: not the broker's
    "org-admin": ("acme", "lead", ("org-admin",)),
    "agent": ("acme", "worker", ()),
}


@dataclass
class Env:
    broker: RunningBroker
    keys: dict[str, str]
    http: str
    channel: grpc.aio.Channel

    def md(self, who: str) -> Metadata:
        return auth(self.keys[who])

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channel)

    @property
    def config(self) -> config_pb2_grpc.ConfigServiceStub:
        return config_pb2_grpc.ConfigServiceStub(self.channel)


async def _keys(data_dir: str) -> dict[str, str]:
    """A key per role, made in the data directory before the broker starts."""
    from lockgate.broker.auth import create_key
    from lockgate.broker.store.sqlite import SqliteStore

    store = SqliteStore(data_dir, fsync="never")
    await store.open()
    try:
        return {name: (await create_key(store, *spec))[0] for name, spec in WHO.items()}
    finally:
        await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[Env]:
    with tempfile.TemporaryDirectory(prefix="lockgate-registry-") as data_dir:
        keys = await _keys(data_dir)
        port = free_port()
        args = ["--http", f"127.0.0.1:{port}"]
        async with (
            run_broker(data_dir=data_dir, extra_args=args) as b,
            grpc.aio.insecure_channel(b.target) as channel,
        ):
            yield Env(b, keys, f"http://127.0.0.1:{port}", channel)


def _id() -> str:
    return "bb-" + uuid.uuid4().hex[:8]


def _org() -> str:
    return "org-" + uuid.uuid4().hex[:8]


async def _rpc_error(call: object) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    code, reason, meta = error_info(exc.value)
    return code, reason, meta, exc.value.details() or ""


# -- the registry over gRPC ------------------------------------------------------------------


async def test_registry_crud_over_grpc(env: Env) -> None:
    r, md = env.registry, env.md("admin")
    bid, org = _id(), _org()
    bb = registry_pb2.Backbone(
        id=bid,
        endpoint="nats://127.0.0.1:4222",
        org_ids=[org],
        cluster_ids=["k8s-eu"],
        region="eu",
        version="2.10",
    )
    created = (
        await r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md)
    ).backbone
    assert (created.id, list(created.org_ids), created.status) == (bid, [org], "active")
    assert created.create_time.ToMilliseconds() > 0
    got = (await r.GetBackbone(registry_pb2.GetBackboneRequest(id=bid), metadata=md)).backbone
    assert got == created
    bb.status = "maintenance"
    bb.endpoint = "tls://127.0.0.1:4223"
    updated = (
        await r.UpdateBackbone(registry_pb2.UpdateBackboneRequest(backbone=bb), metadata=md)
    ).backbone
    assert (updated.status, updated.endpoint) == ("maintenance", "tls://127.0.0.1:4223")
    assert updated.create_time == created.create_time
    listed = (await r.ListBackbones(registry_pb2.ListBackbonesRequest(), metadata=md)).backbones
    assert bid in [b.id for b in listed]
    await r.DeleteBackbone(registry_pb2.DeleteBackboneRequest(id=bid), metadata=md)
    code, reason, _, _ = await _rpc_error(
        r.GetBackbone(registry_pb2.GetBackboneRequest(id=bid), metadata=md)
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


async def test_registry_rejections_over_grpc(env: Env) -> None:
    r, md = env.registry, env.md("admin")
    bid, org = _id(), _org()
    bb = registry_pb2.Backbone(id=bid, endpoint="nats://127.0.0.1:4222", org_ids=[org])
    await r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md)
    code, reason, _, _ = await _rpc_error(
        r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md)
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    other = registry_pb2.Backbone(id=_id(), endpoint="nats://127.0.0.1:4222", org_ids=[org])
    code, reason, meta, text = await _rpc_error(
        r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=other), metadata=md)
    )
    assert (code, reason, meta["org"], meta["backbone"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
        org,
        bid,
    )
    assert "pinned" in text or "served by" in text
    for field, bad in (
        ("endpoint", registry_pb2.Backbone(id=_id(), endpoint="http://x:1")),
        ("id", registry_pb2.Backbone(id="no spaces", endpoint="nats://h:1")),
        ("status", registry_pb2.Backbone(id=_id(), endpoint="nats://h:1", status="melted")),
        ("org_ids", registry_pb2.Backbone(id=_id(), endpoint="nats://h:1", org_ids=["a b"])),
        # hostile endpoints: a password without a port, a huge query, a fragment
        ("endpoint", registry_pb2.Backbone(id=_id(), endpoint="nats://u:s3cr3t@h")),
        ("endpoint", registry_pb2.Backbone(id=_id(), endpoint="nats://s3cr3t@h:1?" + "q" * 9000)),
        ("endpoint", registry_pb2.Backbone(id=_id(), endpoint="nats://h:1/#frag")),
    ):
        code, reason, meta, text = await _rpc_error(
            r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bad), metadata=md)
        )
        assert (code, reason, meta.get("field")) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            field,
        )
        assert "s3cr3t" not in text and len(text) < 600, text
    missing = registry_pb2.Backbone(id=_id(), endpoint="nats://h:1")
    for call in (
        r.UpdateBackbone(registry_pb2.UpdateBackboneRequest(backbone=missing), metadata=md),
        r.DeleteBackbone(registry_pb2.DeleteBackboneRequest(id=missing.id), metadata=md),
        r.GetBackbone(registry_pb2.GetBackboneRequest(id=missing.id), metadata=md),
    ):
        code, reason, _, _ = await _rpc_error(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


@pytest.mark.parametrize("who", ["legacy-admin", "org-admin", "agent"])
async def test_only_the_brokers_admin_touches_registry_and_config(env: Env, who: str) -> None:
    """An org's admin (``admin`` in org evil, ``org-admin`` of acme) is refused, as an agent."""
    md = env.md(who)
    bb = registry_pb2.Backbone(id=_id(), endpoint="nats://127.0.0.1:4222", org_ids=[WHO[who][0]])
    calls = [
        (
            "registry.write",
            env.registry.CreateBackbone(
                registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md
            ),
        ),
        (
            "registry.read",
            env.registry.ListBackbones(registry_pb2.ListBackbonesRequest(), metadata=md),
        ),
        ("config.read", env.config.GetConfig(config_pb2.GetConfigRequest(), metadata=md)),
        (
            "config.write",
            env.config.SetConfig(
                config_pb2.SetConfigRequest(
                    changes=[config_pb2.ConfigChange(name="publish_rate", value="1")]
                ),
                metadata=md,
            ),
        ),
    ]
    for action, call in calls:
        code, reason, meta, _ = await _rpc_error(call)
        assert (code, reason, meta["action"], meta["needs"]) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
            action,
            "admin",
        )


# -- the config store over gRPC --------------------------------------------------------------


async def test_config_set_get_history_rollback_over_grpc(env: Env) -> None:
    c, md = env.config, env.md("admin")
    pattern = f"cfg.{uuid.uuid4().hex[:8]}.>"
    start = (await c.GetConfig(config_pb2.GetConfigRequest(), metadata=md)).version.version
    set_ = await c.SetConfig(
        config_pb2.SetConfigRequest(
            changes=[
                config_pb2.ConfigChange(pattern=pattern, name="max_deliveries", value="7"),
                config_pb2.ConfigChange(pattern=pattern, name="ack_wait", value="90s"),
            ],
            expected_version=start,
        ),
        metadata=md,
    )
    v = set_.version
    assert v.version == start + 1 and v.active and v.origin == "set" and v.author == "default/ops"
    got = await c.GetConfig(config_pb2.GetConfigRequest(), metadata=md)
    assert {(s.pattern, s.name, s.value) for s in got.settings} >= {
        (pattern, "max_deliveries", "7"),
        (pattern, "ack_wait", "90s"),
    }
    history = await c.ListConfigVersions(config_pb2.ListConfigVersionsRequest(), metadata=md)
    assert history.versions[0].version == v.version and history.versions[0].active
    back = await c.RollbackConfig(config_pb2.RollbackConfigRequest(), metadata=md)
    assert back.version.version == v.version + 1 and back.version.origin == "rollback"
    after = await c.GetConfig(config_pb2.GetConfigRequest(), metadata=md)
    assert pattern not in {s.pattern for s in after.settings}
    old = await c.GetConfig(config_pb2.GetConfigRequest(version=v.version), metadata=md)
    assert not old.version.active and any(s.pattern == pattern for s in old.settings)


async def test_config_rejections_over_grpc(env: Env) -> None:
    c, md = env.config, env.md("admin")
    before = (await c.GetConfig(config_pb2.GetConfigRequest(), metadata=md)).version.version
    for name, value, words in (
        ("ack_wait", "soon", "ack_wait"),
        ("max_deliveries", "100000", "out of range"),
        ("subscriber_max_bytes", "1024", "out of range"),
        ("speed", "11", "not a setting"),
    ):
        code, reason, meta, text = await _rpc_error(
            c.SetConfig(
                config_pb2.SetConfigRequest(
                    changes=[config_pb2.ConfigChange(pattern="a.>", name=name, value=value)]
                ),
                metadata=md,
            )
        )
        assert (code, reason, meta["setting"]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SETTING",
            name,
        )
        assert name in text and words in text
    code, reason, _, _ = await _rpc_error(
        c.SetConfig(
            config_pb2.SetConfigRequest(
                changes=[config_pb2.ConfigChange(pattern="a..b", name="backoff", value="2")]
            ),
            metadata=md,
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SUBJECT")
    code, reason, _, _ = await _rpc_error(
        c.SetConfig(
            config_pb2.SetConfigRequest(
                changes=[config_pb2.ConfigChange(name="backoff", value="2")],
                expected_version=before + 50,
            ),
            metadata=md,
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION")
    for call in (
        c.RollbackConfig(config_pb2.RollbackConfigRequest(version=before + 50), metadata=md),
        c.GetConfig(config_pb2.GetConfigRequest(version=before + 50), metadata=md),
    ):
        code, reason, _, _ = await _rpc_error(call)
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION")
    after = (await c.GetConfig(config_pb2.GetConfigRequest(), metadata=md)).version.version
    assert after == before  # nothing refused became a version


async def test_a_rate_limit_change_takes_effect_on_the_next_publishes(env: Env) -> None:
    """Live, without a restart: publishes flow, a per-pattern limit is set, the next
    publishes are refused RATE_LIMITED; removing it lets them through again."""
    b, md = broker_pb2_grpc.BrokerServiceStub(env.channel), env.md("agent")
    prefix = f"live.{uuid.uuid4().hex[:8]}"

    async def publish(n: int) -> list[str]:
        resp = await b.Publish(
            iter(
                [
                    broker_pb2.PublishRequest(
                        batch_id=1, subject=f"{prefix}.x", events=[event() for _ in range(n)]
                    )
                ]
            ),
            metadata=md,
        ).read()
        return [e.reason for e in resp.errors]

    assert await publish(3) == []
    await env.config.SetConfig(
        config_pb2.SetConfigRequest(
            changes=[
                config_pb2.ConfigChange(pattern=f"{prefix}.>", name="publish_rate", value="0.001"),
                config_pb2.ConfigChange(pattern=f"{prefix}.>", name="publish_burst", value="1"),
            ]
        ),
        metadata=env.md("admin"),
    )
    await eventually(lambda: _limited(publish), timeout=5, what="the limit is in force")
    await env.config.SetConfig(
        config_pb2.SetConfigRequest(
            changes=[
                config_pb2.ConfigChange(pattern=f"{prefix}.>", name="publish_rate", unset=True)
            ]
        ),
        metadata=env.md("admin"),
    )
    await eventually(lambda: _flows(publish), timeout=5, what="the limit is gone")


async def _limited(publish: object) -> bool:
    return "RATE_LIMITED" in await publish(2)  # type: ignore[operator]


async def _flows(publish: object) -> bool:
    return await publish(2) == []  # type: ignore[operator]


async def test_changes_and_refusals_are_in_the_audit_log(env: Env) -> None:
    md = env.md("admin")
    bid = _id()
    bb = registry_pb2.Backbone(id=bid, endpoint="nats://u:s3cr3t@127.0.0.1:4222")
    await env.registry.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md)
    await env.registry.DeleteBackbone(registry_pb2.DeleteBackboneRequest(id=bid), metadata=md)
    await _rpc_error(
        env.registry.DeleteBackbone(registry_pb2.DeleteBackboneRequest(id=bid), metadata=md)
    )
    audit = audit_pb2_grpc.AuditServiceStub(env.channel)

    async def records() -> list[audit_pb2.AuditRecord] | None:
        resp = await audit.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(action="registry", page_size=1000), metadata=md
        )
        mine = [r for r in resp.records if r.target == bid]
        return mine if len(mine) >= 3 else None

    mine = await eventually(records)
    assert [(r.action, r.outcome) for r in mine] == [
        ("registry.create", "ok"),
        ("registry.delete", "ok"),
        ("registry.delete", "failed"),
    ]
    assert mine[0].org == "default" and mine[0].agent == "ops" and mine[0].surface == "grpc"
    assert mine[0].detail["endpoint"] == "nats://<redacted>@127.0.0.1:4222"  # no password


# -- HTTP ------------------------------------------------------------------------------------


async def test_registry_and_config_over_http(env: Env) -> None:
    admin = {"Authorization": f"Bearer {env.keys['admin']}"}
    lead = {"Authorization": f"Bearer {env.keys['org-admin']}"}
    bid, org = _id(), _org()
    async with aiohttp.ClientSession() as http:
        body = {"id": bid, "endpoint": "nats://127.0.0.1:4222", "org_ids": [org], "region": "eu"}
        async with http.post(f"{env.http}/v1/backbones", json=body, headers=admin) as resp:
            assert resp.status == 201, await resp.text()
            doc = await resp.json()
            assert (doc["id"], doc["org_ids"], doc["status"]) == (bid, [org], "active")
        async with http.post(f"{env.http}/v1/backbones", json=body, headers=admin) as resp:
            assert resp.status == 409
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["reason"] == "ALREADY_EXISTS"
        put = {"endpoint": "nats://127.0.0.1:4222", "status": "down"}
        async with http.put(f"{env.http}/v1/backbones/{bid}", json=put, headers=admin) as resp:
            doc = await resp.json()
            assert resp.status == 200 and doc["status"] == "down" and doc["org_ids"] == []
        async with http.get(f"{env.http}/v1/backbones", headers=admin) as resp:
            assert bid in [b["id"] for b in (await resp.json())["backbones"]]
        async with http.get(f"{env.http}/v1/backbones/{bid}", headers=lead) as resp:
            doc = await resp.json()
            assert (resp.status, doc["reason"]) == (403, "PERMISSION_DENIED")
        async with http.delete(f"{env.http}/v1/backbones/{bid}", headers=admin) as resp:
            assert resp.status == 200
        async with http.get(f"{env.http}/v1/backbones/{bid}", headers=admin) as resp:
            doc = await resp.json()
            assert (resp.status, doc["reason"]) == (404, "NOT_FOUND")
            assert resp.content_type == "application/problem+json"
        pattern = f"http.{uuid.uuid4().hex[:8]}.>"
        change = {
            "changes": [{"pattern": pattern, "name": "subscriber_max_bytes", "value": 2097152}]
        }
        async with http.patch(f"{env.http}/v1/config", json=change, headers=admin) as resp:
            doc = await resp.json()
            assert resp.status == 200, doc
            version = doc["version"]["version"]
        async with http.get(f"{env.http}/v1/config", headers=admin) as resp:
            doc = await resp.json()
            assert doc["version"]["version"] == version
            assert doc["settings"][pattern] == {"subscriber_max_bytes": "2097152"}
        bad = {"changes": [{"pattern": pattern, "name": "subscriber_max_bytes", "value": "many"}]}
        async with http.patch(f"{env.http}/v1/config", json=bad, headers=admin) as resp:
            doc = await resp.json()
            assert (resp.status, doc["reason"]) == (400, "INVALID_SETTING")
            assert "subscriber_max_bytes" in doc["detail"]
        async with http.patch(f"{env.http}/v1/config", json=change, headers=lead) as resp:
            assert resp.status == 403
        for junk in ({"changes": "all"}, {"changes": [{"name": "backoff", "value": [1]}]}):
            async with http.patch(f"{env.http}/v1/config", json=junk, headers=admin) as resp:
                doc = await resp.json()
                assert (resp.status, doc["reason"]) == (400, "INVALID_PARAMETER")
        async with http.post(f"{env.http}/v1/backbones", json={"id": _id()}, headers=admin) as resp:
            doc = await resp.json()
            assert (resp.status, doc["reason"]) == (400, "INVALID_PARAMETER")  # no endpoint
        async with http.get(f"{env.http}/v1/config/versions?limit=2", headers=admin) as resp:
            versions = (await resp.json())["versions"]
            assert versions[0]["version"] == version and versions[0]["active"]
        async with http.post(f"{env.http}/v1/config/rollback", json={}, headers=admin) as resp:
            doc = await resp.json()
            assert doc["version"]["version"] == version + 1
            assert doc["version"]["origin"] == "rollback"
        async with http.post(
            f"{env.http}/v1/config/rollback", json={"version": 10**9}, headers=admin
        ) as resp:
            doc = await resp.json()
            assert (resp.status, doc["reason"]) == (404, "UNKNOWN_VERSION")


# -- credentials in reads --------------------------------------------------------------------


async def test_reads_never_show_an_endpoints_credentials(env: Env) -> None:
    """Stored and used, never shown: gRPC, HTTP and the CLI read the endpoint redacted as the
    audit log does, and the CLI's update (a read-modify-write) keeps the credentials."""
    md, bid = env.md("admin"), _id()
    secret, shown = "nats://ops:s3cr3t@127.0.0.1:4222", "nats://<redacted>@127.0.0.1:4222"
    bb = registry_pb2.Backbone(id=bid, endpoint=secret)
    r = env.registry
    created = await r.CreateBackbone(registry_pb2.CreateBackboneRequest(backbone=bb), metadata=md)
    assert created.backbone.endpoint == shown
    got = await r.GetBackbone(registry_pb2.GetBackboneRequest(id=bid), metadata=md)
    assert got.backbone.endpoint == shown
    listed = await r.ListBackbones(registry_pb2.ListBackbonesRequest(), metadata=md)
    assert [b.endpoint for b in listed.backbones if b.id == bid] == [shown]

    admin = {"Authorization": f"Bearer {env.keys['admin']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{env.http}/v1/backbones/{bid}", headers=admin) as resp:
            assert (await resp.json())["endpoint"] == shown
        async with http.get(f"{env.http}/v1/backbones", headers=admin) as resp:
            docs = (await resp.json())["backbones"]
            assert [b["endpoint"] for b in docs if b["id"] == bid] == [shown]

    out = await asyncio.to_thread(_cli, env, "admin", "backbones", "get", bid)
    assert out.returncode == 0 and json.loads(out.stdout)["endpoint"] == shown
    out = await asyncio.to_thread(_cli, env, "admin", "backbones", "list")
    assert "s3cr3t" not in out.stdout and shown in out.stdout
    # The update sends back the endpoint it read; a literal "<redacted>" would be refused.
    out = await asyncio.to_thread(
        _cli, env, "admin", "backbones", "update", bid, "--status", "maintenance"
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["endpoint"], doc["status"]) == (shown, "maintenance")
    await r.DeleteBackbone(registry_pb2.DeleteBackboneRequest(id=bid), metadata=md)


# -- the CLI ---------------------------------------------------------------------------------


def _cli(env: Env, who: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [LOCKGATE, *args, "--server", env.broker.target, "--api-key", env.keys[who]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


async def test_the_cli(env: Env) -> None:
    assert os.path.exists(LOCKGATE)
    bid, org = _id(), _org()

    def run(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _cli(env, who, *args)

    out = await asyncio.to_thread(
        run,
        "admin",
        "backbones",
        "create",
        bid,
        "--endpoint",
        "nats://127.0.0.1:4222",
        "--org",
        org,
        "--region",
        "eu",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["org_ids"] == [org]
    out = await asyncio.to_thread(run, "admin", "backbones", "update", bid, "--status", "degraded")
    doc = json.loads(out.stdout)
    assert (doc["status"], doc["org_ids"], doc["region"]) == ("degraded", [org], "eu")
    out = await asyncio.to_thread(run, "admin", "backbones", "delete", bid)
    assert out.returncode == 0 and json.loads(out.stdout) == {"deleted": bid}
    out = await asyncio.to_thread(run, "admin", "backbones", "get", bid)
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    out = await asyncio.to_thread(run, "org-admin", "backbones", "list")
    assert out.returncode == 1 and "admin" in out.stderr and "Traceback" not in out.stderr

    pattern = f"cli.{uuid.uuid4().hex[:8]}.>"
    out = await asyncio.to_thread(
        run, "admin", "config", "set", "max_deliveries=3", "backoff=2", "--pattern", pattern
    )
    assert out.returncode == 0, out.stderr
    version = json.loads(out.stdout)["version"]
    out = await asyncio.to_thread(run, "admin", "config", "get")
    doc = json.loads(out.stdout)
    assert doc["version"] == version and doc["active"]
    assert doc["settings"][pattern] == {"max_deliveries": "3", "backoff": "2"}
    out = await asyncio.to_thread(
        run, "admin", "config", "set", "max_deliveries=zero", "--pattern", pattern
    )
    assert out.returncode == 1 and "max_deliveries" in out.stderr
    assert "Traceback" not in out.stderr
    out = await asyncio.to_thread(run, "admin", "config", "set", "oops")
    assert out.returncode != 0 and "NAME=VALUE" in out.stderr and "Traceback" not in out.stderr
    out = await asyncio.to_thread(run, "admin", "config", "history", "--limit", "1")
    assert json.loads(out.stdout)["version"] == version  # --limit is not --limiter's
    out = await asyncio.to_thread(run, "admin", "config", "rollback")
    assert json.loads(out.stdout)["detail"] == f"rollback to {version - 1}"
