"""Per-org policy sets attacked from outside (issue 8: every new surface is attacked), against
a real broker with real keys of two orgs: evil's org-admin pushes a 10 MB set, a set that
denies everything (and names acme's subjects), reaches for acme's and the global set, and
pushes pathological sets. test_e2e_org_policies.py covers the feature; this file the attacks
it has to survive (put/get/list of another org's set are there, rollback and the CLI here)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc, policy_pb2, policy_pb2_grpc
from lockgate.clients import Client, InvalidEvent, PermissionDenied
from lockgate.clients._errors import from_rpc_error
from tests.broker.e2e_kit import Metadata, auth, error_info, event, query_all, subscribe
from tests.broker.test_policy_in_broker import keys_create

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

KEYS = {
    "acme_admin": ("acme", "lead", "org-admin"),
    "acme": ("acme", "worker"),
    "evil_admin": ("evil", "boss", "org-admin"),
    "evil": ("evil", "minion"),
}
ACME_SET = 'policy acme_own on "acme.>" {\n  allow publish, subscribe\n}\n'
EVIL_FIRST = 'policy first on "evil.>" {\n  allow publish, subscribe\n}\n'


@dataclass
class Env:
    broker: RunningBroker
    stub: broker_pb2_grpc.BrokerServiceStub
    policy: policy_pb2_grpc.PolicyServiceStub
    keys: dict[str, str]
    acme_version: str
    acme_old_version: str

    def md(self, who: str) -> Metadata:
        return auth(self.keys[who])


@pytest_asyncio.fixture(loop_scope="session")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = str(tmp_path / "data")
    keys = {name: await keys_create(data, *spec) for name, spec in KEYS.items()}
    async with (
        run_broker(data_dir=data) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        policy = policy_pb2_grpc.PolicyServiceStub(ch)
        versions = []
        for text in ('policy acme_old on "old.>" {\n  allow publish\n}\n', ACME_SET):
            resp = await policy.PutPolicies(
                policy_pb2.PutPoliciesRequest(
                    files=[policy_pb2.PolicyFile(name="acme.policy", source=text)], org="acme"
                ),
                metadata=auth(keys["acme_admin"]),
            )
            versions.append(resp.version)
        yield Env(
            b,
            broker_pb2_grpc.BrokerServiceStub(ch),
            policy,
            keys,
            versions[1],
            versions[0],
        )


async def put(env: Env, who: str, org: str, **sets: str) -> policy_pb2.PutPoliciesResponse:
    files = [policy_pb2.PolicyFile(name=f"{n}.policy", source=t) for n, t in sets.items()]
    return await env.policy.PutPolicies(
        policy_pb2.PutPoliciesRequest(files=files, org=org), metadata=env.md(who), timeout=60
    )


async def active(env: Env, org: str) -> str:
    resp = await env.policy.ListPolicyVersions(
        policy_pb2.ListPolicyVersionsRequest(org=org), metadata=env.md(f"{org}_admin")
    )
    return next((v.version for v in resp.versions if v.active), "")


async def publish(env: Env, who: str, subject: str) -> int:
    resp = await env.stub.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event(who)),
        metadata=env.md(who),
        timeout=30,
    )
    return int(resp.id)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_sentence(proc: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("lockgate: "), proc.stderr
    assert all(line.startswith(("lockgate: ", "hint: ")) for line in lines), proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, proc.stderr


def ten_megabytes() -> dict[str, str]:
    """Ten valid-looking files of about 1 MB each (each under the 1 MiB file limit)."""
    rule = '  deny publish when event.type == "t{}"\n'
    body = "".join(rule.format(i) for i in range(24_000))
    return {
        f"big{n}.policy": f'policy big{n} on "evil.{n}.>" {{\n{body}  allow publish\n}}\n'
        for n in range(10)
    }


async def test_a_10_mb_set_is_refused_as_too_large_and_changes_nothing(
    env: Env, tmp_path: Path
) -> None:
    await put(env, "evil_admin", "evil", first=EVIL_FIRST)
    before = await active(env, "evil")
    big = ten_megabytes()
    assert sum(map(len, big.values())) > 9_500_000
    # The Python client (its send limit is the broker's max_message_bytes).
    async with Client(env.broker.target, api_key=env.keys["evil_admin"]) as c:
        with pytest.raises(InvalidEvent) as exc:
            await c.admin.put_policies(big, org="evil")
    assert exc.value.reason == "EVENT_TOO_LARGE" and "larger than" in exc.value.message
    # Raw gRPC with no send limit of its own: the broker refuses the message unread.
    files = [policy_pb2.PolicyFile(name=n, source=t) for n, t in big.items()]
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await env.policy.PutPolicies(
            policy_pb2.PutPoliciesRequest(files=files, org="evil"),
            metadata=env.md("evil_admin"),
            timeout=60,
        )
    assert raw.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    as_client = from_rpc_error(raw.value)
    assert isinstance(as_client, InvalidEvent) and as_client.reason == "EVENT_TOO_LARGE"
    # The CLI: one sentence and a hint.
    pdir = tmp_path / "evil-policies"
    pdir.mkdir()
    for name, text in big.items():
        (pdir / name).write_text(text)
    proc = await asyncio.to_thread(
        cli,
        "policy",
        "push",
        str(pdir),
        "--org",
        "evil",
        "--server",
        env.broker.target,
        "--api-key",
        env.keys["evil_admin"],
    )
    assert_one_sentence(proc, "larger than", "hint: ")
    assert await active(env, "evil") == before
    assert await publish(env, "evil", "evil.still.works")


async def test_evils_deny_everything_set_is_evils_alone(env: Env) -> None:
    """``on ">"`` in evil's set is evil's subjects; ``acme.payments`` in evil is evil's."""
    tail = uuid.uuid4().hex[:8]
    subject = f"acme.payments.{tail}"
    evils_own = await publish(env, "evil", subject)  # evil's own "acme.payments"
    resp = await put(env, "evil_admin", "evil", x='policy x on ">" {\n  deny publish\n}\n')
    assert resp.applied
    acme_sub = await subscribe(env.stub, env.md("acme"), pattern="acme.payments.>")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await publish(env, "evil", subject)
        code, reason, meta = error_info(exc.value)
        assert (code, reason, meta["rule"]) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "POLICY_DENIED",
            "evil/x.policy:2",
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await publish(env, "evil", f"orders.{tail}")
        acme_id = await publish(env, "acme", subject)
        got = await acme_sub.collect(1, 10)
        assert [d.id for d in got] == [acme_id]
        # acme's history holds acme's event alone; evil's "acme.payments" event is evil's.
        assert [e.id for e in await query_all(env.stub, subject, env.md("acme"))] == [acme_id]
        assert await active(env, "acme") == env.acme_version
    finally:
        await acme_sub.close()
        await put(env, "evil_admin", "evil", first=EVIL_FIRST)
    # (A set of deny rules alone allow-lists its subjects: evil may not even read them then.)
    assert [e.id for e in await query_all(env.stub, subject, env.md("evil"))] == [evils_own]


async def test_evils_admin_cannot_touch_acmes_or_the_global_set(env: Env) -> None:
    md = env.md("evil_admin")
    for org in ("acme", ""):
        calls = {
            "policy.write": env.policy.PutPolicies(
                policy_pb2.PutPoliciesRequest(
                    files=[policy_pb2.PolicyFile(name="x.policy", source=EVIL_FIRST)], org=org
                ),
                metadata=md,
            ),
            "policy.rollback": env.policy.RollbackPolicies(
                policy_pb2.RollbackPoliciesRequest(org=org, version=env.acme_old_version),
                metadata=md,
            ),
            "policy.read": env.policy.GetPolicies(
                policy_pb2.GetPoliciesRequest(org=org), metadata=md
            ),
            "policy.versions": env.policy.ListPolicyVersions(
                policy_pb2.ListPolicyVersionsRequest(org=org), metadata=md
            ),
        }
        for what, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call
            code, reason, meta = error_info(exc.value)
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"), (
                org,
                what,
            )
            assert meta.get("action", "").startswith("policy."), (org, what, meta)
            assert exc.value.details(), (org, what)
    # The same through the client and the CLI, which name the refusal in one sentence.
    async with Client(env.broker.target, api_key=env.keys["evil_admin"]) as c:
        with pytest.raises(PermissionDenied):
            await c.admin.rollback_policies(env.acme_old_version, org="acme")
        with pytest.raises(PermissionDenied):
            await c.admin.get_policies(org="acme")
    common = ["--server", env.broker.target, "--api-key", env.keys["evil_admin"]]
    for args in (
        ("policy", "rollback", env.acme_old_version, "--org", "acme"),
        ("policy", "versions", "--org", "acme"),
    ):
        proc = await asyncio.to_thread(cli, *args, *common)
        assert_one_sentence(proc, "hint: ")
    # Nothing moved: acme's set and its decisions are as acme put them.
    assert await active(env, "acme") == env.acme_version
    got = await env.policy.GetPolicies(
        policy_pb2.GetPoliciesRequest(org="acme"), metadata=env.md("acme_admin")
    )
    assert [f.source for f in got.files] == [ACME_SET]


async def test_pathological_sets_are_refused_or_compiled_off_the_loop(env: Env) -> None:
    """A 10,000-rule set compiles in a worker thread: acme's publishes are answered while
    it compiles (the loop is free); an expression nested 50,000 deep is refused with its
    position. (tests/broker/test_policies.py measures the loop lag of a compile; here it is
    the org admin's path, end to end.)"""
    deep = 'policy d on "evil.>" {\n  deny publish when ' + "not " * 50_000 + "true\n}\n"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await put(env, "evil_admin", "evil", d=deep)
    code, reason, _ = error_info(exc.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "POLICY_INVALID")
    assert "nested deeper than 32 levels" in (exc.value.details() or "")

    rules = "".join(f'  deny publish when event.type == "t{i}"\n' for i in range(10_000))
    many = f'policy many on "evil.>" {{\n{rules}  allow publish\n}}\n'
    pushing = asyncio.create_task(put(env, "evil_admin", "evil", many=many))
    answered_first = 0
    try:
        while not pushing.done():
            await publish(env, "acme", f"acme.live.{uuid.uuid4().hex[:6]}")
            if not pushing.done():
                answered_first += 1
    finally:
        resp = await pushing
    assert resp.applied
    # Publishes were answered while the set compiled (one compile on the loop would have
    # held them all until it was done).
    assert answered_first >= 1
    assert await publish(env, "evil", "evil.ok")
    await put(env, "evil_admin", "evil", first=EVIL_FIRST)
