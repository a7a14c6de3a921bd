"""Policies in the running broker: decisions become statuses, effects are applied, sets are
hot-swapped, and ``lockgate policy replay`` reads the log. Real broker processes, raw stubs."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc, policy_pb2, policy_pb2_grpc
from tests.broker.e2e_kit import (
    Metadata,
    auth,
    error_info,
    event,
    query_all,
    run_cli,
    subscribe,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BILLING = """\
policy billing on "billing.>" {
  allow publish   when "billing" in principal.roles
  allow subscribe when principal.roles has_any ["billing", "audit"]
  deny publish when event.type == "payment.failed" and event.data.amount > 10000
      unless "finance" in principal.roles
      because "large failed payments need finance"
  require event.datacontenttype == "application/json" because "billing events are JSON"
  limit publish 5 per minute by principal.agent
  route copy to "audit.billing" when event.type matches "^payment[.]"
  tag "priority" = "high" when subject[1] == "eu"
}

policy audit on "audit.>" {
  allow subscribe when "audit" in principal.roles
}
"""


async def keys_create(data_dir: str, org: str, agent: str, *roles: str) -> str:
    """A key written straight into the data dir's store (what ``lockgate keys create`` does;
    test_e2e_auth runs the command itself), without a process start per key."""
    store = SqliteStore(data_dir, fsync="always")
    await store.open()
    try:
        key, _ = await create_key(store, org, agent, roles)
    finally:
        await store.close()
    return key


def json_event(data: dict[str, object], type: str = "invoice.created") -> broker_pb2.CloudEvent:
    ev = event(json.dumps(data), type=type)
    ev.attributes["datacontenttype"].ce_string = "application/json"
    return ev


@dataclass
class Env:
    broker: RunningBroker
    stub: broker_pb2_grpc.BrokerServiceStub
    policy: policy_pb2_grpc.PolicyServiceStub
    billing: Metadata
    finance: Metadata
    outsider: Metadata
    admin: Metadata
    policy_dir: Path
    ops: Metadata
    """The broker's admin (admin in the admin_org): the global policy set is theirs."""


@pytest_asyncio.fixture(loop_scope="session")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = tmp_path / "data"
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "billing.policy").write_text(BILLING)
    keys = {
        "billing": await keys_create(str(data), "acme", "bill-bot", "billing"),
        "finance": await keys_create(str(data), "acme", "fin-bot", "billing", "finance", "audit"),
        "outsider": await keys_create(str(data), "acme", "other-bot"),
        "admin": await keys_create(str(data), "acme", "ops", "admin"),
        "ops": await keys_create(str(data), "default", "ops", "admin"),
    }
    args = ["--policy-dir", str(pdir), "--policy-reload-interval", "0.2s"]
    async with (
        run_broker(data_dir=str(data), extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        yield Env(
            b,
            broker_pb2_grpc.BrokerServiceStub(ch),
            policy_pb2_grpc.PolicyServiceStub(ch),
            *(auth(keys[k]) for k in ("billing", "finance", "outsider", "admin")),
            pdir,
            auth(keys["ops"]),
        )


async def publish_one(env: Env, md: Metadata, subject: str, ev: object) -> int:
    resp = await env.stub.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=ev), metadata=md, timeout=10
    )
    return int(resp.id)


async def rejected(env: Env, md: Metadata, subject: str, ev: object) -> tuple[str, str, dict]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await publish_one(env, md, subject, ev)
    code, reason, meta = error_info(exc.value)
    return code.name, reason, meta


async def test_decisions_become_statuses_and_nothing_is_stored(env: Env) -> None:
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    code, reason, meta = await rejected(env, env.outsider, subject, json_event({"n": 1}))
    assert (code, reason) == ("PERMISSION_DENIED", "POLICY_DENIED")
    assert meta["effect"] == "default"
    code, reason, meta = await rejected(
        env, env.billing, subject, json_event({"amount": 50_000}, "payment.failed")
    )
    assert (code, reason, meta["rule"]) == (
        "PERMISSION_DENIED",
        "POLICY_DENIED",
        "billing.policy:4",
    )
    plain = event("not json")
    code, reason, meta = await rejected(env, env.billing, subject, plain)
    assert (code, reason, meta["rule"]) == (
        "FAILED_PRECONDITION",
        "POLICY_REQUIREMENT",
        "billing.policy:7",
    )
    assert await query_all(env.stub, subject, env.finance) == []
    # The exception of the deny: finance may publish it.
    assert await publish_one(
        env, env.finance, subject, json_event({"amount": 50_000}, "payment.failed")
    )


async def test_batch_mixes_allowed_and_denied(env: Env) -> None:
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    call = env.stub.Publish(metadata=env.finance)
    await call.write(
        broker_pb2.PublishRequest(
            subject=subject,
            events=[json_event({"i": 1}), event("text"), json_event({"i": 2})],
            batch_id=9,
        )
    )
    resp = await call.read()
    await call.done_writing()
    assert resp.batch_id == 9
    assert resp.ids[0] and resp.ids[2] and not resp.ids[1]
    assert [(e.index, e.reason) for e in resp.errors] == [(1, "POLICY_REQUIREMENT")]
    assert len(await query_all(env.stub, subject, env.finance)) == 2


async def test_limit_returns_retry_after(env: Env) -> None:
    key = await keys_create(
        str(Path(env.broker.data_dir)), "acme", f"burst-{uuid.uuid4().hex[:6]}", "billing"
    )
    md = auth(key)
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    for i in range(5):
        await publish_one(env, md, subject, json_event({"i": i}))
    code, reason, meta = await rejected(env, md, subject, json_event({"i": 6}))
    assert (code, reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
    assert 0 < float(meta["retry_after"]) <= 12.5  # 5 per minute: one token every 12 s


async def test_route_copy_and_tag_and_policy_version(env: Env) -> None:
    audit = await subscribe(env.stub, env.finance, pattern="audit.billing")
    try:
        subject = f"billing.eu.{uuid.uuid4().hex[:6]}"
        eid = await publish_one(env, env.finance, subject, json_event({"n": 1}, "payment.settled"))
        (copy,) = await audit.collect(1, timeout=10)
        assert copy.subject == "audit.billing"
        assert copy.event.attributes["lockgateroutedfrom"].ce_string == subject
        assert copy.id != eid
        stored = (
            await env.stub.GetEvent(broker_pb2.GetEventRequest(id=eid), metadata=env.finance)
        ).event
        assert stored.event.attributes["priority"].ce_string == "high"
        running = await env.policy.GetPolicies(policy_pb2.GetPoliciesRequest(), metadata=env.ops)
        assert stored.policy_version == running.version.version
    finally:
        await audit.close()


async def test_subscribe_is_decided(env: Env) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await subscribe(env.stub, env.outsider, pattern="billing.>")
    assert error_info(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    # A wildcard reaching billing's subjects needs billing's permission too: ">" and "*.us"
    # would otherwise receive its events; ">" also reaches audit's, which billing agents lack.
    for who, pattern in ((env.outsider, ">"), (env.outsider, "*.us"), (env.billing, ">")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await subscribe(env.stub, who, pattern=pattern)
        assert error_info(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")
    # "*.us" reaches audit.us too; fin-bot holds billing and audit, so it may subscribe to ">".
    for who, pattern in ((env.billing, "billing.*"), (env.finance, ">")):
        allowed = await subscribe(env.stub, who, pattern=pattern)
        await allowed.close()


async def test_hot_swap_by_file_and_rpc_and_rollback(env: Env) -> None:
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    before = await env.policy.GetPolicies(policy_pb2.GetPoliciesRequest(), metadata=env.ops)
    # A broken file is refused; the running set stays.
    (env.policy_dir / "broken.policy").write_text('policy x on "x.>" { allow publsh }\n')
    await eventually(lambda: any(b"policy reload refused" in line for line in env.broker.output))
    now = await env.policy.GetPolicies(policy_pb2.GetPoliciesRequest(), metadata=env.ops)
    assert now.version.version == before.version.version
    (env.policy_dir / "broken.policy").unlink()
    # validate_only with errors: INVALID_ARGUMENT / POLICY_INVALID with line and column.
    bad = [policy_pb2.PolicyFile(name="b.policy", source='policy b on "b.>" { allow jump }')]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await env.policy.PutPolicies(
            policy_pb2.PutPoliciesRequest(files=bad, validate_only=True), metadata=env.ops
        )
    code, reason, _ = error_info(exc.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "POLICY_INVALID")
    assert "b.policy:1:" in exc.value.details()
    # A valid set put over RPC: outsiders may now publish.
    open_set = [
        policy_pb2.PolicyFile(
            name="open.policy", source='policy open on "billing.>" { allow publish }\n'
        )
    ]
    checked = await env.policy.PutPolicies(
        policy_pb2.PutPoliciesRequest(files=open_set, validate_only=True), metadata=env.ops
    )
    assert not checked.applied
    await rejected(env, env.outsider, subject, json_event({}))
    put = await env.policy.PutPolicies(
        policy_pb2.PutPoliciesRequest(files=open_set), metadata=env.ops
    )
    assert put.applied
    assert await publish_one(env, env.outsider, subject, event("anything"))
    versions = await env.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(), metadata=env.ops
    )
    assert [v.version for v in versions.versions if v.active] == [put.version]
    back = await env.policy.RollbackPolicies(
        policy_pb2.RollbackPoliciesRequest(version=before.version.version), metadata=env.ops
    )
    assert back.version.version == before.version.version
    code, reason, _ = await rejected(env, env.outsider, subject, json_event({}))
    assert reason == "POLICY_DENIED"
    # A non-admin may not touch policies.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await env.policy.ListPolicyVersions(
            policy_pb2.ListPolicyVersionsRequest(), metadata=env.billing
        )
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_file_change_reloads(env: Env) -> None:
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    await rejected(env, env.outsider, subject, json_event({}))
    (env.policy_dir / "billing.policy").write_text(
        BILLING.replace('"billing" in principal.roles', '"billing" in principal.roles or true')
    )

    async def allowed() -> bool:
        try:
            await publish_one(env, env.outsider, subject, json_event({}))
        except grpc.aio.AioRpcError as err:
            assert error_info(err)[1] == "POLICY_DENIED", err
            return False
        return True

    await eventually(allowed, interval=0.2, what="the changed policy file is reloaded")


async def test_emptied_or_deleted_policy_files_fail_closed(env: Env) -> None:
    """A truncated file (a non-atomic rewrite), a deleted file and a removed directory are
    refused: the running set stays, so what it denies stays denied. Only PutPolicies with no
    files means "no policies"."""
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    out = env.broker.output

    def count(text: bytes) -> int:
        return sum(text in line for line in out)

    async def refused_after(n: int) -> None:
        await eventually(lambda: count(b"policy.reload.refused") > n, what="a refused reload")
        code, reason, _ = await rejected(env, env.outsider, subject, json_event({}))
        assert (code, reason) == ("PERMISSION_DENIED", "POLICY_DENIED")

    async def restored() -> None:
        running = count(b"(dir, 1 files)")
        (env.policy_dir / "billing.policy").write_text(BILLING)
        await eventually(lambda: count(b"(dir, 1 files)") > running, what="the file reloads")

    before = await env.policy.GetPolicies(policy_pb2.GetPoliciesRequest(), metadata=env.ops)
    await rejected(env, env.outsider, subject, json_event({}))
    (env.policy_dir / "billing.policy").write_text("")
    await refused_after(0)
    await restored()
    (env.policy_dir / "billing.policy").unlink()
    await refused_after(1)
    await restored()
    (env.policy_dir / "billing.policy").unlink()
    env.policy_dir.rmdir()
    await refused_after(2)
    now = await env.policy.GetPolicies(policy_pb2.GetPoliciesRequest(), metadata=env.ops)
    assert now.version.version == before.version.version
    # The operator's explicit "no policies": an empty set put over the API.
    put = await env.policy.PutPolicies(policy_pb2.PutPoliciesRequest(), metadata=env.ops)
    assert put.applied
    assert await publish_one(env, env.outsider, subject, json_event({}))


async def test_a_restart_over_an_emptied_policy_dir_keeps_the_stored_set(tmp_path: Path) -> None:
    data, pdir = tmp_path / "data", tmp_path / "policies"
    pdir.mkdir()
    (pdir / "billing.policy").write_text(BILLING)
    outsider = auth(await keys_create(str(data), "acme", "other-bot"))
    args = ["--policy-dir", str(pdir)]
    async with run_broker(data_dir=str(data), extra_args=args):
        pass
    (pdir / "billing.policy").unlink()
    async with (
        run_broker(data_dir=str(data), extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        assert any(b"policy.reload.refused" in line for line in b.output)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await broker_pb2_grpc.BrokerServiceStub(ch).PublishOne(
                broker_pb2.PublishOneRequest(subject="billing.us.x", event=json_event({})),
                metadata=outsider,
                timeout=10,
            )
        assert error_info(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "POLICY_DENIED")


async def test_replay_reports_changed_decisions(env: Env, tmp_path: Path) -> None:
    subject = f"billing.us.{uuid.uuid4().hex[:6]}"
    for i in range(3):
        await publish_one(env, env.billing, subject, json_event({"i": i}))
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "billing.policy").write_text(
        BILLING.replace(
            'allow publish   when "billing" in principal.roles',
            'allow publish   when "finance" in principal.roles',
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        "policy",
        "replay",
        str(candidate),
        "--data-dir",
        env.broker.data_dir,
        "--since",
        "-1h",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert err == b""  # no progress bar: stderr is not a terminal
    report = json.loads(out)
    # bill-bot's events (at least the three above) would now be denied; finance's would not.
    assert report["newly_denied"] >= 3
    assert report["total"] >= report["changed"] >= 3
    # On a terminal, a bar on stderr while the events are decided; the report is the same.
    replay = ["policy", "replay", str(candidate), "--data-dir", env.broker.data_dir, "--json"]
    code, shown, bar = await asyncio.to_thread(run_cli, replay, tty="stderr")
    assert code == 0, bar
    assert json.loads(shown)["newly_denied"] == report["newly_denied"]
    assert "replay [" + "#" * 30 + "] 100% " in bar


async def test_spam_controls() -> None:
    args = ["--spam-max-per-minute", "3", "--spam-duplicate-window", "60s"]
    async with run_broker(extra_args=args) as b, grpc.aio.insecure_channel(b.target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        same = event("same content")
        await stub.PublishOne(broker_pb2.PublishOneRequest(subject="chat.x", event=same))
        again = event("same content")  # new CloudEvents id, same payload
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.PublishOne(broker_pb2.PublishOneRequest(subject="chat.x", event=again))
        assert error_info(exc.value)[:2] == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CONTENT")
        # The refused duplicate still counted: the counter counts every message sent.
        await stub.PublishOne(broker_pb2.PublishOneRequest(subject="chat.x", event=event("m1")))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.PublishOne(broker_pb2.PublishOneRequest(subject="chat.x", event=event("m9")))
        code, reason, meta = error_info(exc.value)
        assert (code, reason, meta["rule"]) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
            "spam",
        )
        assert "more than 3 events in a minute" in exc.value.details()


@pytest.mark.redis
async def test_two_brokers_share_one_redis_bucket(tmp_path: Path, redis_url: str) -> None:
    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "l.policy").write_text(
        'policy l on "shared.>" {\n  allow publish\n'
        "  limit publish 5 per hour by principal.org\n}\n"
    )
    # A fresh org name per run keeps the bucket key fresh on the shared Redis server.
    org = f"org{uuid.uuid4().hex[:8]}"
    keys = [await keys_create(str(tmp_path / f"d{i}"), org, "a") for i in range(2)]
    args = ["--policy-dir", str(pdir), "--limiter", redis_url]
    async with (
        run_broker(str(tmp_path / "d0"), args) as b0,
        run_broker(str(tmp_path / "d1"), args) as b1,
    ):
        accepted = 0
        for b, key in ((b0, keys[0]), (b1, keys[1])) * 4:
            async with grpc.aio.insecure_channel(b.target) as ch:
                stub = broker_pb2_grpc.BrokerServiceStub(ch)
                try:
                    await stub.PublishOne(
                        broker_pb2.PublishOneRequest(subject="shared.x", event=event("x")),
                        metadata=auth(key),
                    )
                    accepted += 1
                except grpc.aio.AioRpcError as exc:
                    assert error_info(exc)[1] == "RATE_LIMITED"
        assert accepted == 5
