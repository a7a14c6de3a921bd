"""The audit log end to end: a real ``lockgate serve`` (keys made with ``lockgate keys``, a
policy directory, the HTTP gateway), each recorded action, and reading the log over gRPC,
HTTP and ``lockgate audit``: the admin role only, filters, paging, the export format."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
)
from tests.broker.e2e_kit import (
    LOCKGATE,
    Metadata,
    auth,
    error_info,
    event,
    lockgate_cli,
    lockgate_cli_in_process,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SECRETS = """\
policy secrets on "secret.>" {
  closed: deny publish, subscribe because "secrets are closed"
}
"""
OPEN = 'policy open on "open.>" {\n  allow publish\n}\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Audited:
    broker: RunningBroker
    data_dir: str
    policy_dir: Path
    http: str
    keys: dict[str, str]
    channel: grpc.aio.Channel

    def md(self, who: str) -> Metadata:
        return auth(self.keys[who])

    @property
    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channel)

    async def records(self, **kw: object) -> list[audit_pb2.AuditRecord]:
        """Every record the filter selects, read as the admin, following the pages."""
        out: list[audit_pb2.AuditRecord] = []
        token = ""
        while True:
            resp = await self.audit.ListAuditRecords(
                audit_pb2.ListAuditRecordsRequest(page_token=token, page_size=1000, **kw),  # type: ignore[arg-type]
                metadata=self.md("admin"),
                timeout=10,
            )
            out.extend(resp.records)
            token = resp.next_page_token
            if not token:
                return out


def _key(data_dir: str, org: str, agent: str, *roles: str) -> str:
    role_args = [a for r in roles for a in ("--role", r)]
    out = lockgate_cli_in_process(
        "keys", "create", "--org", org, "--agent", agent, *role_args, "--data-dir", data_dir
    )
    return out.strip().splitlines()[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def audited() -> AsyncIterator[Audited]:
    with tempfile.TemporaryDirectory(prefix="lockgate-audit-") as data_dir:
        policy_dir = Path(data_dir) / "policies"
        policy_dir.mkdir()
        (policy_dir / "secrets.policy").write_text(SECRETS)
        specs = {
            "admin": ("default", "ops", "admin"),  # the broker's (admin_org "default")
            "lead": ("acme", "lead", "org-admin"),
            "agent": ("acme", "a1"),
            "globex": ("globex", "g1"),
            "spare": ("acme", "spare"),
        }
        keys = {}
        # In-process (the commands' process boundary is the tests' revoke and rotate).
        for name, spec in specs.items():
            keys[name] = await asyncio.to_thread(_key, data_dir, *spec)
        keys["token"] = (
            await asyncio.to_thread(
                lockgate_cli_in_process,
                "tokens",
                "issue",
                "--org",
                "acme",
                "--agent",
                "t1",
                "--ttl",
                "1h",
                "--data-dir",
                data_dir,
            )
        ).strip()
        port = free_port()
        args = [
            "--policy-dir",
            str(policy_dir),
            "--policy-reload-interval",
            "100ms",
            "--audit-window",
            "300ms",
            "--http",
            f"127.0.0.1:{port}",
        ]
        async with (
            run_broker(data_dir=data_dir, extra_args=args) as b,
            grpc.aio.insecure_channel(b.target) as channel,
        ):
            yield Audited(b, data_dir, policy_dir, f"http://127.0.0.1:{port}", keys, channel)


async def _eventually_records(
    a: Audited, check: object, **kw: object
) -> list[audit_pb2.AuditRecord]:
    """The records once ``check(records)`` holds (records are written moments after)."""

    async def ready() -> list[audit_pb2.AuditRecord] | None:
        recs = await a.records(**kw)
        return recs if check(recs) else None  # type: ignore[operator]

    return await eventually(ready, timeout=20)  # type: ignore[no-any-return]


async def test_the_start_records_its_configuration(audited: Audited) -> None:
    (rec,) = await _eventually_records(audited, lambda r: len(r) == 1, action="config")
    assert (rec.action, rec.outcome, rec.surface) == ("config.load", "ok", "broker")
    assert rec.detail["changed"] == "(first start)"
    settings = json.loads(rec.detail["settings"])
    assert settings["audit_window"] == 0.3 and settings["policy_dir"] == str(audited.policy_dir)


async def test_keys_created_and_revoked_with_the_cli_are_recorded(audited: Audited) -> None:
    spare_id = audited.keys["spare"].split("_")[1]
    await asyncio.to_thread(
        lockgate_cli, "keys", "revoke", spare_id, "--data-dir", audited.data_dir
    )
    recs = await _eventually_records(
        audited, lambda r: any(x.action == "key.revoke" for x in r), action="key"
    )
    created = [r for r in recs if r.action == "key.create"]
    assert len(created) == 5
    assert {(r.detail["org"], r.detail["agent"]) for r in created} == {
        ("default", "ops"),
        ("acme", "lead"),
        ("acme", "a1"),
        ("globex", "g1"),
        ("acme", "spare"),
    }
    assert all(r.surface == "cli" and r.peer.startswith("local:") for r in created)
    assert all(r.org == r.detail["org"] and r.agent == "" for r in created)  # the key's org
    assert next(r for r in created if r.detail["agent"] == "ops").detail["roles"] == "admin"
    (revoked,) = [r for r in recs if r.action == "key.revoke"]
    assert (revoked.target, revoked.outcome, revoked.org) == (spare_id, "ok", "acme")
    for r in recs:  # secrets never reach the log
        for credential in audited.keys.values():  # a key's secret, or a token's signature
            secret = credential.split("_")[2] if credential.startswith("lg_") else credential
            assert secret.rsplit(".", 1)[-1] not in str(r)


async def test_authentication_failures_are_recorded_and_aggregated(audited: Audited) -> None:
    stub = broker_pb2_grpc.BrokerServiceStub(audited.channel)
    for i in range(12):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetEvent(
                broker_pb2.GetEventRequest(id=1), metadata=auth(f"lg_bad{i}_guess"), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Every failure counted, in far fewer records than attempts (one per peer per window).
    recs = await _eventually_records(
        audited,
        lambda r: sum(x.count for x in r if x.credential.startswith("bad")) == 12,
        action="auth",
    )
    bad = [r for r in recs if r.credential.startswith("bad")]
    assert len(bad) < 12
    first = bad[0]
    assert (first.outcome, first.surface, first.credential) == ("failed", "grpc", "bad0")
    assert first.peer.startswith(("ipv4:127.0.0.1:", "ipv6:[::1]:"))
    assert first.detail["reason"] == "UNAUTHENTICATED"


async def test_denied_publishes_and_subscriptions_name_the_rule(audited: Audited) -> None:
    stub = broker_pb2_grpc.BrokerServiceStub(audited.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PublishOne(
            broker_pb2.PublishOneRequest(subject="secret.pay", event=event()),
            metadata=audited.md("agent"),
            timeout=10,
        )
    assert error_info(err.value)[1] == "POLICY_DENIED"
    call = stub.Subscribe(metadata=audited.md("agent"))
    await call.write(broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern="secret.>")))
    with pytest.raises(grpc.aio.AioRpcError):
        while await call.read() is not grpc.aio.EOF:
            pass
    headers = {
        "ce-id": "h1",
        "ce-source": "/t",
        "ce-type": "t",
        "ce-specversion": "1.0",
        "authorization": "Bearer " + audited.keys["agent"],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{audited.http}/v1/subjects/secret.http/events", data=b"x", headers=headers
        ) as r,
    ):
        assert r.status == 403
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{audited.http}/v1/ws", headers={"authorization": "Bearer " + audited.keys["agent"]}
        ) as ws,
    ):
        await ws.send_json({"op": "subscribe", "pattern": "secret.ws", "ref": 1})
        answer = await ws.receive_json(timeout=10)
        assert answer["op"] != "ok" and answer.get("reason") == "POLICY_DENIED", answer
    recs = await _eventually_records(audited, lambda r: len(r) >= 4, outcome="denied", agent="a1")
    by_target = {r.target: r for r in recs}
    ws_sub = by_target["secret.ws"]
    assert (ws_sub.action, ws_sub.surface, ws_sub.peer) == ("subscribe", "ws", "127.0.0.1")
    pub, sub, http_pub = by_target["secret.pay"], by_target["secret.>"], by_target["secret.http"]
    assert (pub.action, sub.action, http_pub.action) == ("publish", "subscribe", "publish")
    for r in (pub, sub, http_pub):
        assert (r.org, r.agent, r.outcome) == ("acme", "a1", "denied")
        assert r.credential == audited.keys["agent"].split("_")[1]
        assert r.detail["rule"] == "secrets.policy:2" and r.detail["effect"] == "deny"
        assert r.detail["policy_version"]
    assert (pub.surface, sub.surface, http_pub.surface) == ("grpc", "grpc", "http")
    assert http_pub.peer == "127.0.0.1"


async def test_policy_changes_are_recorded(audited: Audited) -> None:
    policy = policy_pb2_grpc.PolicyServiceStub(audited.channel)
    admin = audited.md("admin")
    # A file reload (the broker's own doing), then a put, a refused put and a rollback.
    (audited.policy_dir / "open.policy").write_text(OPEN)
    reload = await _eventually_records(
        audited,
        lambda r: any("open.policy" in x.detail.get("files", "") for x in r),
        action="policy.reload",
    )
    start, reloaded = reload  # the set loaded at the start, then the changed directory
    assert start.detail["files"] == "secrets.policy" and reloaded.detail["previous"] == start.target
    assert reloaded.surface == "broker" and reloaded.detail["files"] == "open.policy,secrets.policy"
    files = [
        policy_pb2.PolicyFile(name="secrets.policy", source=SECRETS),
        policy_pb2.PolicyFile(name="more.policy", source=OPEN.replace("open", "more")),
    ]
    put = await policy.PutPolicies(
        policy_pb2.PutPoliciesRequest(files=files), metadata=admin, timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await policy.PutPolicies(
            policy_pb2.PutPoliciesRequest(
                files=[policy_pb2.PolicyFile(name="x.policy", source="{")]
            ),
            metadata=admin,
            timeout=10,
        )
    back = await policy.RollbackPolicies(
        policy_pb2.RollbackPoliciesRequest(version=reloaded.target), metadata=admin, timeout=10
    )
    assert back.version.version == reloaded.target
    recs = await _eventually_records(
        audited, lambda r: any(x.action == "policy.rollback" for x in r), action="policy"
    )
    puts = [r for r in recs if r.action == "policy.put"]
    assert [(r.outcome, r.target) for r in puts] == [("ok", put.version), ("failed", "")]
    assert puts[0].detail["previous"] == reloaded.target
    assert puts[1].detail["reason"] == "POLICY_INVALID"
    (rollback,) = [r for r in recs if r.action == "policy.rollback"]
    assert (rollback.target, rollback.detail["previous"]) == (reloaded.target, put.version)
    for r in [*puts, rollback]:
        assert (r.org, r.agent, r.surface) == ("default", "ops", "grpc")


async def test_durable_deletion_and_redrive_are_recorded(audited: Audited) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(audited.channel)
    md = audited.md("admin")
    await admin.CreateDurable(
        admin_pb2.CreateDurableRequest(name="audited", pattern="free.>"), metadata=md, timeout=10
    )
    await admin.RedriveDeadLetters(
        admin_pb2.RedriveDeadLettersRequest(durable="audited"), metadata=md, timeout=10
    )
    await admin.DeleteDurable(
        admin_pb2.DeleteDurableRequest(name="audited"), metadata=md, timeout=10
    )
    recs = await _eventually_records(
        audited,
        lambda r: {x.action for x in r} >= {"durable.delete", "dlq.redrive"},
        org_filter="default",
        agent="ops",
    )
    redrive = next(r for r in recs if r.action == "dlq.redrive")
    delete = next(r for r in recs if r.action == "durable.delete")
    assert (redrive.target, redrive.detail["count"], redrive.detail["ids"]) == (
        "audited",
        "0",
        "all",
    )
    assert (delete.target, delete.outcome, delete.surface) == ("audited", "ok", "grpc")


async def test_agents_cannot_read_the_audit_log(audited: Audited) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audited.audit.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(), metadata=audited.md("agent"), timeout=10
        )
    code, reason, meta = error_info(err.value)
    assert (code, reason, meta["action"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
        "audit.read",
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{audited.http}/v1/audit",
            headers={"authorization": "Bearer " + audited.keys["globex"]},
        ) as r,
    ):
        assert r.status == 403
        assert r.content_type == "application/problem+json"
        body = await r.json()
        assert body["reason"] == "PERMISSION_DENIED" and "records" not in body
    async with aiohttp.ClientSession() as http, http.get(f"{audited.http}/v1/audit") as r:
        assert r.status == 401 and (await r.json())["reason"] == "UNAUTHENTICATED"
    proc = await asyncio.to_thread(
        _cli, "audit", "--server", audited.broker.target, "--api-key", audited.keys["agent"]
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert "read the audit log" in proc.stderr and "Traceback" not in proc.stderr
    # The refusals are themselves recorded.
    recs = await _eventually_records(
        audited, lambda r: len(r) >= 3, action="access", outcome="denied"
    )
    assert {(r.agent, r.target, r.surface) for r in recs} >= {
        ("a1", "audit.read", "grpc"),
        ("g1", "audit.read", "http"),
    }


async def test_an_org_admin_reads_its_own_org_only(audited: Audited) -> None:
    lead = audited.md("lead")
    resp = await audited.audit.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(page_size=1000), metadata=lead, timeout=10
    )
    assert resp.records and {r.org for r in resp.records} == {"acme"}
    for other in ("globex", "default"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await audited.audit.ListAuditRecords(
                audit_pb2.ListAuditRecordsRequest(org_filter=other), metadata=lead, timeout=10
            )
        assert error_info(err.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    headers = {"authorization": "Bearer " + audited.keys["lead"]}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{audited.http}/v1/audit?limit=1000", headers=headers) as r:
            assert r.status == 200
            assert {x["org"] for x in (await r.json())["records"]} == {"acme"}
        async with http.get(f"{audited.http}/v1/audit?org=globex", headers=headers) as r:
            assert r.status == 403 and (await r.json())["reason"] == "PERMISSION_DENIED"


async def test_bad_filters_are_refused(audited: Audited) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audited.audit.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(page_token="zz"),
            metadata=audited.md("admin"),
            timeout=10,
        )
    assert error_info(err.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    headers = {"authorization": "Bearer " + audited.keys["admin"]}
    async with aiohttp.ClientSession() as http:
        for query in ("since=yesterday-ish", "after=abc", "limit=0", "limit=5000"):
            async with http.get(f"{audited.http}/v1/audit?{query}", headers=headers) as r:
                assert r.status == 400, query
                assert r.content_type == "application/problem+json"
                assert (await r.json())["reason"] == "INVALID_PARAMETER", query


async def test_an_org_filter_shows_that_org_only(audited: Audited) -> None:
    stub = broker_pb2_grpc.BrokerServiceStub(audited.channel)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.PublishOne(
            broker_pb2.PublishOneRequest(subject="secret.globex", event=event()),
            metadata=audited.md("globex"),
            timeout=10,
        )
    recs = await _eventually_records(
        audited, lambda r: any(x.target == "secret.globex" for x in r), org_filter="globex"
    )
    assert {r.org for r in recs} == {"globex"}
    everyone = await audited.records()
    assert {"acme", "globex", "default", ""} <= {r.org for r in everyone}  # broker-wide


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [LOCKGATE] if os.path.exists(LOCKGATE) else [sys.executable, "-m", "lockgate.broker.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, check=False)


async def test_cli_and_http_export_the_same_json_lines(audited: Audited) -> None:
    key = audited.keys["admin"]
    proc = await asyncio.to_thread(
        _cli,
        "audit",
        "--since",
        "1h",
        "--action",
        "key",
        "--json",
        "--server",
        audited.broker.target,
        "--api-key",
        key,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 6 and {x["action"] for x in lines} == {"key.create", "key.revoke"}
    pages: list[dict[str, object]] = []
    after = ""
    async with aiohttp.ClientSession() as http:
        while True:  # one record a page, to walk the cursor
            url = f"{audited.http}/v1/audit?action=key&since=-1h&limit=1" + (
                f"&after={after}" if after else ""
            )
            async with http.get(url, headers={"authorization": "Bearer " + key}) as r:
                assert r.status == 200
                body = await r.json()
            pages.extend(body["records"])
            if body["next"] is None:
                break
            after = body["next"]
    assert pages == lines
    first = lines[0]
    assert list(first) == [
        "id",
        "time",
        "org",
        "agent",
        "credential",
        "action",
        "target",
        "outcome",
        "surface",
        "peer",
        "count",
        "detail",
    ]
    assert isinstance(first["id"], str) and first["time"].endswith("Z")
    text = await asyncio.to_thread(
        _cli, "audit", "--action", "key.revoke", "--server", audited.broker.target, "--api-key", key
    )
    assert text.returncode == 0 and "key.revoke" in text.stdout and "via cli local:" in text.stdout


async def test_rotations_and_issued_tokens_are_recorded(audited: Audited) -> None:
    globex_id = audited.keys["globex"].split("_")[1]
    await asyncio.to_thread(
        lockgate_cli, "keys", "rotate", globex_id, "--grace", "1h", "--data-dir", audited.data_dir
    )
    stub = broker_pb2_grpc.BrokerServiceStub(audited.channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the token works, the policy denies
        await stub.PublishOne(
            broker_pb2.PublishOneRequest(subject="secret.tok", event=event()),
            metadata=audited.md("token"),
            timeout=10,
        )
    assert error_info(err.value)[1] == "POLICY_DENIED"
    recs = await _eventually_records(
        audited,
        lambda r: {x.action for x in r} >= {"key.rotate", "token.issue", "publish"},
    )
    (rotated,) = [r for r in recs if r.action == "key.rotate"]
    assert (rotated.target, rotated.org, rotated.outcome) == (globex_id, "globex", "ok")
    assert rotated.detail["new_key"] and rotated.detail["new_key"] != globex_id
    (issued,) = [r for r in recs if r.action == "token.issue"]
    assert (issued.org, issued.detail["agent"], issued.detail["ttl"]) == ("acme", "t1", "1h")
    assert issued.target.startswith("sha256:") and audited.keys["token"] not in str(issued)
    used = next(r for r in recs if r.action == "publish" and r.target == "secret.tok")
    # The token is named alike where it was issued and where it was used.
    assert (used.agent, used.credential) == ("t1", issued.target)
