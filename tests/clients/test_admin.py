"""``client.admin`` against a real broker: durables, dead letters and policies, returned as the
client's own dataclasses (never generated protobuf messages)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from google.protobuf.message import Message as ProtoMessage

from lockgate import clients
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.clients import Client
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ALLOW_ALL = 'policy all on ">" {\n  allow publish\n  allow subscribe\n}\n'


def _no_protobuf(value: object) -> None:
    """Walks a result: dataclasses, lists, dicts, plain values; no protobuf message anywhere."""
    assert not isinstance(value, ProtoMessage), value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _no_protobuf(getattr(value, f.name))
    elif isinstance(value, list):
        for item in value:
            _no_protobuf(item)
    elif isinstance(value, dict):
        for item in value.values():
            _no_protobuf(item)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker() -> AsyncIterator[RunningBroker]:
    async with run_broker() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def client(broker: RunningBroker) -> AsyncIterator[Client]:
    async with Client(broker.target, connect_timeout=10) as c:
        yield c


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_durables_lifecycle(client: Client) -> None:
    name, subject = _name("adm"), f"adm.{uuid.uuid4().hex[:8]}"
    info = await client.admin.create_durable(
        name, subject, start="all", ack_wait=1.5, max_deliveries=3
    )
    assert isinstance(info, clients.DurableInfo)
    assert (info.name, info.pattern, info.ack_wait, info.max_deliveries) == (
        name,
        subject,
        1.5,
        3,
    )
    eid = await client.publish(subject, "x")
    [msg] = await client.fetch(name, wait=2)
    assert msg.id == eid
    state = await client.admin.get_durable(name)
    assert isinstance(state, clients.DurableState)
    assert state.durable.pending_count == 1
    [pending] = state.pending
    assert (pending.id, pending.attempt) == (eid, 1)
    assert pending.deadline is None or pending.deadline > dt.datetime.now(dt.UTC)
    listed = await client.admin.list_durables()
    assert name in [d.name for d in listed]
    _no_protobuf(listed)
    _no_protobuf(state)
    await client.admin.delete_durable(name)
    with pytest.raises(clients.NotFound) as info_err:
        await client.admin.get_durable(name)
    assert info_err.value.reason == "UNKNOWN_DURABLE"


async def test_dead_letters_come_back_as_records(client: Client) -> None:
    name, subject = _name("dead"), f"dead.{uuid.uuid4().hex[:8]}"
    await client.admin.create_durable(name, subject, start="all", max_deliveries=1)
    eid = await client.publish(subject, {"poison": True})
    [msg] = await client.fetch(name, wait=2)
    await client.acknowledge(name, nack=[msg.id])

    async def dead() -> list[clients.DeadLetter]:
        # A polled durable moves a spent event to its dead letters when it is next due.
        assert await client.fetch(name, wait=0.2) == []
        return await client.admin.list_dead_letters(name)

    letters = await eventually(dead, timeout=10)
    [letter] = letters
    assert (letter.id, letter.durable, letter.attempts) == (eid, name, 1)
    assert isinstance(letter.event, clients.StoredEvent) and letter.event.data == {"poison": True}
    _no_protobuf(letters)
    assert await client.admin.redrive(name) == 1
    assert [m.id for m in await client.fetch(name, wait=2)] == [eid]
    await client.admin.delete_durable(name)


async def test_policies_put_get_list_rollback(client: Client) -> None:
    checked = await client.admin.put_policies({"all.policy": ALLOW_ALL}, validate_only=True)
    assert isinstance(checked, clients.PolicyUpdate) and not checked.applied
    applied = await client.admin.put_policies({"all.policy": ALLOW_ALL})
    assert applied.applied and applied.version == checked.version
    running = await client.admin.get_policies()
    assert isinstance(running, clients.PolicySet)
    assert running.version.version == applied.version and running.version.active
    assert running.files == {"all.policy": ALLOW_ALL}
    versions = await client.admin.list_policy_versions()
    assert versions[0].version == applied.version
    _no_protobuf([checked, running, versions])
    with pytest.raises(clients.InvalidArgument) as bad:
        await client.admin.put_policies({"b.policy": 'policy b on "b.>" { allow jump }'})
    assert bad.value.reason == "POLICY_INVALID"
    with pytest.raises(clients.NotFound) as unknown:
        await client.admin.get_policies("no-such-version")
    assert unknown.value.reason == "UNKNOWN_VERSION"
    newer = await client.admin.put_policies({"all.policy": "# newer\n" + ALLOW_ALL})
    assert newer.version != applied.version
    back = await client.admin.rollback_policies()
    assert isinstance(back, clients.PolicyVersion)
    assert (back.version, back.active) == (applied.version, True)
    assert (await client.admin.get_policies()).version.version == applied.version


async def test_admin_needs_a_connected_client(broker: RunningBroker) -> None:
    c = Client(broker.target)
    with pytest.raises(clients.LockgateError) as err:
        await c.admin.list_durables()
    assert err.value.reason == "NOT_CONNECTED"


async def test_the_facade_keeps_only_the_data_plane() -> None:
    for moved in ("create_durable", "list_durables", "get_durable", "list_dead_letters", "redrive"):
        assert not hasattr(Client, moved), moved


async def test_a_webhook_durable_shows_its_secret_once_and_rotates_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over gRPC: CreateDurable answers the generated secret only when it creates the durable;
    RotateWebhookSecret answers a new one; a durable without an endpoint has none to rotate."""
    monkeypatch.setenv("LOCKGATE_WEBHOOK_ALLOW_PRIVATE", "true")  # the URL is never called
    async with run_broker() as b, Client(b.target, connect_timeout=10) as c:
        name = _name("hook")
        info = await c.admin.create_durable(name, "hook.>", endpoint_url="http://127.0.0.1:9/h")
        assert info.webhook_secret.startswith("whsec_")
        again = await c.admin.create_durable(name, "hook.>", endpoint_url="http://127.0.0.1:9/h")
        assert again.webhook_secret == ""
        assert all(d.webhook_secret == "" for d in await c.admin.list_durables())
        new = await c.admin.rotate_webhook_secret(name, grace=60)
        assert new.startswith("whsec_") and new != info.webhook_secret
        plain = _name("plain")
        await c.admin.create_durable(plain, "plain.>")
        with pytest.raises(clients.LockgateError) as exc:
            await c.admin.rotate_webhook_secret(plain)
        assert exc.value.reason == "FAILED_PRECONDITION"
        for grace in (-1.0, 8 * 86_400.0):  # no negative grace, at most 7 days
            with pytest.raises(clients.InvalidArgument) as bad:
                await c.admin.rotate_webhook_secret(name, grace=grace)
            assert bad.value.reason == "INVALID_SETTING"
        with pytest.raises(clients.NotFound):
            await c.admin.rotate_webhook_secret(_name("nobody"))
