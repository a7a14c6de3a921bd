"""Per-org policy sets against a real broker: an org's administrator manages its own set
through ``PolicyService`` (``org``) and ``lockgate policy push --org``; the operator's global
set is evaluated too, a refusal in either wins, and one org's set never affects another's
events (subjects, tags, limit buckets). Default deny per org. Raw stubs and the CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import (
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
    query_all,
)
from tests.broker.test_policy_in_broker import keys_create
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

KEYS = {
    "ops": ("default", "ops", "admin"),
    "acme_admin": ("acme", "lead", "org-admin"),
    "acme": ("acme", "worker"),
    "evil_admin": ("evil", "boss", "admin"),  # admin outside the admin_org: evil's org-admin
    "evil": ("evil", "minion"),
    "globex": ("globex", "g"),
}


@dataclass
class Env:
    broker: RunningBroker
    stub: broker_pb2_grpc.BrokerServiceStub
    policy: policy_pb2_grpc.PolicyServiceStub
    audit: audit_pb2_grpc.AuditServiceStub
    keys: dict[str, str]
    data_dir: str

    def md(self, who: str) -> Metadata:
        return auth(self.keys[who])


@pytest_asyncio.fixture(loop_scope="session")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = str(tmp_path / "data")
    keys = {name: await keys_create(data, *spec) for name, spec in KEYS.items()}
    args = ["--policy-default-deny", "globex", "--audit-window", "300ms"]
    async with (
        run_broker(data_dir=data, extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        yield Env(
            b,
            broker_pb2_grpc.BrokerServiceStub(ch),
            policy_pb2_grpc.PolicyServiceStub(ch),
            audit_pb2_grpc.AuditServiceStub(ch),
            keys,
            data,
        )


def files(**sets: str) -> list[policy_pb2.PolicyFile]:
    return [policy_pb2.PolicyFile(name=f"{n}.policy", source=t) for n, t in sets.items()]


async def put(env: Env, who: str, org: str, **sets: str) -> policy_pb2.PutPoliciesResponse:
    return await env.policy.PutPolicies(
        policy_pb2.PutPoliciesRequest(files=files(**sets), org=org), metadata=env.md(who)
    )


async def publish(env: Env, who: str, subject: str, ev: object = None) -> int:
    resp = await env.stub.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=ev or event()),
        metadata=env.md(who),
        timeout=10,
    )
    return int(resp.id)


async def refused(env: Env, who: str, subject: str, ev: object = None) -> tuple[str, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await publish(env, who, subject, ev)
    code, reason, meta = error_info(exc.value)
    return code.name, reason, meta


def sub() -> str:
    return f"orders.{uuid.uuid4().hex[:8]}"


DENY_ALL_TAG_ALL = """
policy takeover on ">" {
  deny publish when principal.org == "acme" because "owned"
  allow publish, subscribe, request
  tag "owned" = "yes"
}
"""


async def test_an_org_admin_manages_only_its_own_set(env: Env) -> None:
    # The finding: evil's admin key cannot put the global set...
    for org in ("", "acme"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await put(env, "evil_admin", org, takeover=DENY_ALL_TAG_ALL)
        code, reason, meta = error_info(exc.value)
        assert (code.name, reason, meta["action"]) == (
            "PERMISSION_DENIED",
            "PERMISSION_DENIED",
            "policy.write",
        )
        for read in (
            env.policy.GetPolicies(
                policy_pb2.GetPoliciesRequest(org=org), metadata=env.md("evil_admin")
            ),
            env.policy.ListPolicyVersions(
                policy_pb2.ListPolicyVersionsRequest(org=org), metadata=env.md("evil_admin")
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await read
            assert error_info(exc.value)[1] == "PERMISSION_DENIED"
    # ...an agent not even its own org's...
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await put(env, "evil", "evil", takeover=DENY_ALL_TAG_ALL)
    assert error_info(exc.value)[2]["needs"] == "org-admin"
    # ...but its own org's set, yes: and it only ever applies to evil's events.
    resp = await put(env, "evil_admin", "evil", takeover=DENY_ALL_TAG_ALL)
    assert resp.applied
    subject = sub()
    acme_id = await publish(env, "acme", subject)
    evil_id = await publish(env, "evil", subject)
    (acme_ev,) = await query_all(env.stub, subject, env.md("acme"))
    (evil_ev,) = await query_all(env.stub, subject, env.md("evil"))
    assert acme_ev.id == acme_id and "owned" not in acme_ev.event.attributes
    assert evil_ev.id == evil_id and evil_ev.event.attributes["owned"].ce_string == "yes"
    assert "+evil:" in evil_ev.policy_version and "+" not in acme_ev.policy_version

    # The change is in the audit log, which evil's admin reads for its org.
    async def recorded() -> list[audit_pb2.AuditRecord] | None:
        resp = await env.audit.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(action="policy.put"), metadata=env.md("evil_admin")
        )
        return [r for r in resp.records if r.target == f"evil:{version}"] or None

    version = resp.version
    (rec,) = await eventually(recorded, timeout=20)
    assert (rec.org, rec.agent, rec.outcome, rec.detail["org"]) == ("evil", "boss", "ok", "evil")
    # The broker's admin may manage any org's set, and the global one.
    got = await env.policy.GetPolicies(
        policy_pb2.GetPoliciesRequest(org="evil"), metadata=env.md("ops")
    )
    assert [f.name for f in got.files] == ["takeover.policy"]
    await put(env, "evil_admin", "evil")  # an empty set: no policies of its own


async def test_a_refusal_in_either_set_wins(env: Env) -> None:
    base = f"deny{uuid.uuid4().hex[:6]}"
    global_set = f'policy g on "{base}.global.>" {{\n  deny publish because "ops says no"\n}}\n'
    org_set = (
        f'policy o on "{base}.>" {{\n'
        f'  deny publish when subject[1] == "org" because "acme says no"\n'
        "  allow publish\n}\n"
    )
    await put(env, "ops", "", g=global_set)
    await put(env, "acme_admin", "acme", o=org_set)
    try:
        code, reason, meta = await refused(env, "acme", f"{base}.org.x")
        assert (code, reason, meta["rule"]) == (
            "PERMISSION_DENIED",
            "POLICY_DENIED",
            "acme/o.policy:2",
        )
        code, reason, meta = await refused(env, "acme", f"{base}.global.x")
        assert (reason, meta["rule"]) == ("POLICY_DENIED", "g.policy:2")  # the org's allow loses
        assert await publish(env, "acme", f"{base}.other")
        # Another org is decided by the global set alone.
        assert await publish(env, "evil", f"{base}.org.x")
    finally:
        await put(env, "ops", "")
        await put(env, "acme_admin", "acme")


async def test_an_orgs_limits_are_its_own(env: Env) -> None:
    """Two orgs' sets with the same rule identity never share a bucket."""
    base = f"lim{uuid.uuid4().hex[:6]}"
    limited = f'policy p on "{base}.>" {{\n  allow publish\n  l: limit publish 1 per hour\n}}\n'
    await put(env, "evil_admin", "evil", p=limited)
    await put(env, "acme_admin", "acme", p=limited)
    try:
        assert await publish(env, "evil", f"{base}.a")
        assert (await refused(env, "evil", f"{base}.a"))[1] == "RATE_LIMITED"
        assert await publish(env, "acme", f"{base}.a")  # acme's own bucket is still full
    finally:
        await put(env, "evil_admin", "evil")
        await put(env, "acme_admin", "acme")


async def test_versions_and_rollback_per_org(env: Env) -> None:
    v1 = await put(env, "acme_admin", "acme", a='policy a on "v.>" {\n  allow publish\n}\n')
    v2 = await put(env, "acme_admin", "acme", a='policy a on "v.>" {\n  allow subscribe\n}\n')
    versions = await env.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(org="acme"), metadata=env.md("acme_admin")
    )
    names = [v.version for v in versions.versions]
    assert v1.version in names and v2.version in names
    assert [v.version for v in versions.versions if v.active] == [v2.version]
    assert (await refused(env, "acme", "v.x"))[1] == "POLICY_DENIED"
    back = await env.policy.RollbackPolicies(
        policy_pb2.RollbackPoliciesRequest(org="acme", version=v1.version),
        metadata=env.md("acme_admin"),
    )
    assert back.version.version == v1.version
    assert await publish(env, "acme", "v.x")
    # The global versions are another list.
    glob = await env.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=env.md("ops")
    )
    assert v1.version not in [v.version for v in glob.versions]
    # An invalid org set is refused whole, with its errors; the running one stays.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await put(env, "acme_admin", "acme", a='policy a on "v.>" { allow jump }')
    assert error_info(exc.value)[1] == "POLICY_INVALID"
    assert await publish(env, "acme", "v.x")
    # It survives a restart (the channel reconnects to the same port).
    await env.broker.terminate()
    await env.broker.restart()
    got = await env.policy.GetPolicies(
        policy_pb2.GetPoliciesRequest(org="acme"), metadata=env.md("acme_admin")
    )
    assert (got.version.version, got.version.active) == (v1.version, True)
    assert await publish(env, "acme", "v.y")


async def test_default_deny_for_an_org(env: Env) -> None:
    """``--policy-default-deny globex``: what no policy covers is refused for globex only."""
    code, reason, meta = await refused(env, "globex", sub())
    assert (code, reason, meta["effect"], meta["rule"]) == (
        "PERMISSION_DENIED",
        "POLICY_DENIED",
        "default",
        "default_deny",
    )
    assert await publish(env, "acme", sub())
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        call = env.stub.Subscribe(metadata=env.md("globex"))
        await call.write(
            broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern="orders.>"))
        )
        await asyncio.wait_for(call.read(), 10)
    assert error_info(exc.value)[1] == "POLICY_DENIED"
    # A policy of globex's own (or the operator's) that allows it lets it through.
    await put(env, "ops", "globex", g='policy g on "orders.>" {\n  allow publish\n}\n')
    try:
        assert await publish(env, "globex", sub())
    finally:
        await put(env, "ops", "globex")


async def test_policy_push_cli(env: Env, tmp_path: Path) -> None:
    pdir = tmp_path / "acme-policies"
    pdir.mkdir()
    (pdir / "cli.policy").write_text('policy cli on "cli.>" {\n  allow subscribe\n}\n')
    common = ["--server", env.broker.target, "--api-key", env.keys["acme_admin"]]
    out = await asyncio.to_thread(
        lockgate_cli, "policy", "push", str(pdir), "--org", "acme", *common
    )
    doc = json.loads(out)
    assert doc["applied"] is True and doc["org"] == "acme"
    assert (await refused(env, "acme", "cli.x"))[1] == "POLICY_DENIED"
    out = await asyncio.to_thread(lockgate_cli, "policy", "versions", "--org", "acme", *common)
    assert doc["version"] in out
    # Without --org it is the global set: refused for an org's admin, with the reason.
    proc = await asyncio.create_subprocess_exec(
        LOCKGATE,
        "policy",
        "push",
        str(pdir),
        *common,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode != 0
    assert b"whole broker" in err and b"--org" in err
    await put(env, "acme_admin", "acme")
