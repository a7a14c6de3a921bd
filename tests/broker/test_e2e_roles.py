"""The roles table against a real broker: every RPC of every service, with each built-in
role, is refused for its role exactly when ``broker.permissions`` says so.

The RPCs are enumerated from the service descriptors, so a new RPC without an entry in
``RPC_ACTIONS`` fails here (and the broker refuses to serve it). A refusal for the role is
PERMISSION_DENIED with reason PERMISSION_DENIED and the action in its metadata; any other
outcome (success, NOT_FOUND for a durable that does not exist, ...) means the role passed.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from google.protobuf import message

from lockgate.broker.auth import Principal
from lockgate.broker.permissions import RPC_ACTIONS, Permissions
from lockgate.broker.rpc import message_class
from lockgate.broker.rpc.config_service import ConfigService
from lockgate.broker.rpc.policy_service import PolicyService
from lockgate.broker.rpc.registry_service import RegistryService
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import (
    admin_pb2,
    audit_pb2,
    broker_pb2,
    broker_pb2_grpc,
    config_pb2,
    conversation_pb2,
    policy_pb2,
    registry_pb2,
)
from tests.broker.e2e_kit import auth, error_info, event, lockgate_cli, unique

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SERVICES = [
    broker_pb2.DESCRIPTOR.services_by_name["BrokerService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    policy_pb2.DESCRIPTOR.services_by_name["PolicyService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    conversation_pb2.DESCRIPTOR.services_by_name["ConversationService"],
    registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
    config_pb2.DESCRIPTOR.services_by_name["ConfigService"],
]
BROKER_WIDE = {s.SERVICE: s.BROKER_WIDE for s in (PolicyService, RegistryService, ConfigService)}
# (org, agent, roles) of each key; "default" is the broker's admin_org.
WHO = {
    "admin": ("default", "ops", ("admin",)),
    "legacy-admin": ("evil", "boss", ("admin",)),
    "org-admin": ("acme", "lead", ("org-admin",)),
    "agent": ("acme", "worker", ()),
}


@dataclass
class Env:
    broker: RunningBroker
    keys: dict[str, str]


def _create_key(data_dir: str, org: str, agent: str, roles: tuple[str, ...]) -> str:
    role_args = [a for r in roles for a in ("--role", r)]
    out = lockgate_cli(
        "keys", "create", "--org", org, "--agent", agent, *role_args, "--data-dir", data_dir
    )
    return out.strip().splitlines()[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[Env]:
    with tempfile.TemporaryDirectory(prefix="lockgate-roles-") as data_dir:
        keys = {
            name: await asyncio.to_thread(_create_key, data_dir, *spec)
            for name, spec in WHO.items()
        }
        async with run_broker(data_dir=data_dir) as b:
            yield Env(b, keys)


def _request(method: str, org: str | None) -> message.Message:
    """A small request for ``method`` that answers at once whoever calls it."""
    m = next(m for s in SERVICES for m in s.methods if m.name == method)
    req = message_class(m.input_type)()
    if method in ("PublishOne", "Request"):
        req.subject = unique("roles")
        req.event.CopyFrom(event())
    if method == "Request":
        req.timeout.FromMilliseconds(100)
    if method == "Fetch":
        req.durable = "roles-fetch"
        req.pattern = unique("roles")
    if org is not None:
        req.org = org
    return req


def _targets(method: str, service: str, who: str) -> list[tuple[str | None, str | None]]:
    """(value for the request's org field or None when it has none, the org acted on)."""
    m = next(m for s in SERVICES for m in s.methods if m.name == method)
    own = WHO[who][0]
    if "org" in m.input_type.fields_by_name:
        return [("", None), (own, own), ("globex", "globex")]
    return [(None, None if BROKER_WIDE.get(service) else own)]


def _expected(who: str, action: str, org: str | None) -> bool:
    org_, agent, roles = WHO[who]
    return Permissions("default").allows(Principal(org_, agent, frozenset(roles)), action, org)


async def test_every_rpc_has_an_action() -> None:
    methods = {f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods}
    assert methods == set(RPC_ACTIONS)


async def _unary_outcome(
    channel: grpc.aio.Channel, path: str, req: message.Message, key: str
) -> tuple[str, str]:
    call = channel.unary_unary(
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
    )
    try:
        await call(req, metadata=auth(key), timeout=15)
    except grpc.aio.AioRpcError as err:
        code, reason, meta = error_info(err)
        if code == grpc.StatusCode.PERMISSION_DENIED and reason == "PERMISSION_DENIED":
            return "denied", meta.get("action", "")
        return "passed", code.name
    return "passed", "OK"


@pytest.mark.parametrize("who", list(WHO))
async def test_every_unary_rpc_with_each_role(env: Env, who: str) -> None:
    mismatches = []
    async with grpc.aio.insecure_channel(env.broker.target) as channel:
        for s in SERVICES:
            for m in s.methods:
                if m.client_streaming or m.server_streaming:
                    continue
                path = f"/{s.full_name}/{m.name}"
                action = RPC_ACTIONS[path]
                for field, org in _targets(m.name, s.full_name, who):
                    req = _request(m.name, field)
                    outcome, detail = await _unary_outcome(channel, path, req, env.keys[who])
                    allowed = _expected(who, action, org)
                    if (outcome == "passed") != allowed or (
                        outcome == "denied" and detail != action
                    ):
                        mismatches.append((path, field, outcome, detail, allowed))
    assert mismatches == []


@pytest.mark.parametrize("who", list(WHO))
async def test_the_streams_with_each_role(env: Env, who: str) -> None:
    """Publish and Subscribe are an agent's: every role opens them and gets an answer."""
    assert _expected(who, RPC_ACTIONS["/broker.v1.BrokerService/Publish"], WHO[who][0])
    assert _expected(who, RPC_ACTIONS["/broker.v1.BrokerService/Subscribe"], WHO[who][0])
    async with grpc.aio.insecure_channel(env.broker.target) as channel:
        b = broker_pb2_grpc.BrokerServiceStub(channel)
        pub = b.Publish(metadata=auth(env.keys[who]))
        await pub.write(
            broker_pb2.PublishRequest(batch_id=1, subject=unique("roles"), events=[event()])
        )
        resp = await asyncio.wait_for(pub.read(), 15)
        assert resp.batch_id == 1 and len(resp.ids) == 1
        await pub.done_writing()
        sub = b.Subscribe(metadata=auth(env.keys[who]))
        await sub.write(
            broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern=unique("roles")))
        )
        first = await asyncio.wait_for(sub.read(), 15)
        assert first.subscribed.name
        sub.cancel()


async def test_an_orgs_admin_cannot_change_the_broker_policy(env: Env) -> None:
    """The attack: a key with ``admin`` in org ``evil`` put a set denying org ``acme``'s
    publishes through PutPolicies. Broker-wide administration needs the broker's admin."""
    evil = """
policy takeover on ">" {
  deny publish when principal.org == "acme" because "owned"
  allow publish, subscribe, request
}
"""
    async with grpc.aio.insecure_channel(env.broker.target) as channel:
        put = channel.unary_unary(
            "/broker.v1.PolicyService/PutPolicies",
            request_serializer=policy_pb2.PutPoliciesRequest.SerializeToString,
            response_deserializer=policy_pb2.PutPoliciesResponse.FromString,
        )
        req = policy_pb2.PutPoliciesRequest(
            files=[policy_pb2.PolicyFile(name="evil.policy", source=evil)]
        )
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await put(req, metadata=auth(env.keys["legacy-admin"]), timeout=15)
        code, reason, meta = error_info(exc.value)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert {k: meta[k] for k in ("action", "needs", "role")} == {
            "action": "policy.write",
            "needs": "admin",
            "role": "org-admin",
        }
        assert "whole broker" in (exc.value.details() or "")
        # acme still publishes.
        b = channel.unary_unary(
            "/broker.v1.BrokerService/PublishOne",
            request_serializer=broker_pb2.PublishOneRequest.SerializeToString,
            response_deserializer=broker_pb2.PublishOneResponse.FromString,
        )
        resp = await b(
            broker_pb2.PublishOneRequest(subject=unique("acme"), event=event()),
            metadata=auth(env.keys["agent"]),
            timeout=15,
        )
        assert resp.id
