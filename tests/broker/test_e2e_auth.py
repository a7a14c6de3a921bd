"""API keys, roles and org isolation against a real broker started on a data dir with keys.

Keys are created with the ``lockgate keys`` CLI before the broker starts (a broker with no
key runs in the open dev mode), as an operator would.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import admin_pb2, broker_pb2, broker_pb2_grpc
from tests.broker.e2e_kit import (
    Metadata,
    Stubs,
    Sub,
    assert_no_more,
    auth,
    error_info,
    event,
    lockgate_cli,
    publish_batches,
    publish_one,
    query_all,
    subscribe,
    unique,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class Keyed:
    broker: RunningBroker
    data_dir: str
    keys: dict[str, str]

    def md(self, who: str) -> Metadata:
        return auth(self.keys[who])


def _create_key(data_dir: str, org: str, agent: str, *roles: str) -> str:
    role_args = [a for r in roles for a in ("--role", r)]
    out = lockgate_cli(
        "keys", "create", "--org", org, "--agent", agent, *role_args, "--data-dir", data_dir
    )
    key = out.strip().splitlines()[0]
    assert key.startswith("lg_"), out
    return key


def _key_id(key: str) -> str:
    return key.split("_")[1]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def keyed() -> AsyncIterator[Keyed]:
    with tempfile.TemporaryDirectory(prefix="lockgate-auth-") as data_dir:
        specs = {
            "acme_admin": ("acme", "a1", "admin"),
            "acme_agent": ("acme", "a2"),
            "acme_revoke": ("acme", "a3"),
            "globex_admin": ("globex", "g1", "admin"),
            "globex_agent": ("globex", "g2"),
        }
        keys = dict(
            zip(
                specs,
                await asyncio.gather(
                    *(asyncio.to_thread(_create_key, data_dir, *spec) for spec in specs.values())
                ),
                strict=True,
            )
        )
        async with run_broker(data_dir=data_dir) as b:
            yield Keyed(b, data_dir, keys)


@pytest_asyncio.fixture(loop_scope="session")
async def stubs(keyed: Keyed) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(keyed.broker.target) as channel:
        yield Stubs(channel)


async def _all_calls_fail(stubs: Stubs, md: Metadata | None, subject: str) -> set[tuple[str, str]]:
    """Every kind of RPC with ``md``; returns the distinct (code, reason) they failed with."""
    b, a = stubs.broker, stubs.admin
    seen: set[tuple[str, str]] = set()
    unary = [
        b.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=event()), metadata=md, timeout=10
        ),
        b.QueryEvents(broker_pb2.QueryEventsRequest(pattern=">"), metadata=md, timeout=10),
        b.GetEvent(broker_pb2.GetEventRequest(id=1), metadata=md, timeout=10),
        b.Request(
            broker_pb2.RequestRequest(subject=subject, event=event()), metadata=md, timeout=10
        ),
        a.ListDurables(admin_pb2.ListDurablesRequest(), metadata=md, timeout=10),
        a.GetDurable(admin_pb2.GetDurableRequest(name="x"), metadata=md, timeout=10),
    ]
    for call in unary:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        code, reason, _ = error_info(exc.value)
        seen.add((code.name, reason))
    # The streams are refused on their headers, before any message: read without writing.
    # (Writing first races the server's abort in grpcio's aio client, which then reports
    # INTERNAL "Internal error from Core" instead of the server's status: grpc/grpc#36066.)
    for stream in (b.Publish(metadata=md), b.Subscribe(metadata=md)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await asyncio.wait_for(stream.read(), 10)
        code, reason, _ = error_info(exc.value)
        seen.add((code.name, reason))
    return seen


@pytest.mark.parametrize(
    "how",
    [
        "none",
        "wrong-secret",
        "unknown-id",
        "malformed",
        "malformed-underscores",
        "empty-bearer",
        "basic-scheme",
        "x-api-key-wrong",
    ],
)
async def test_bad_credentials_are_unauthenticated(keyed: Keyed, stubs: Stubs, how: str) -> None:
    good = keyed.keys["acme_admin"]
    md: Metadata | None = {
        "none": None,
        "wrong-secret": auth(f"lg_{_key_id(good)}_{'A' * 43}"),
        "unknown-id": auth(f"lg_000000000000_{good.split('_')[2]}"),
        "malformed": auth("not-a-key"),
        "malformed-underscores": auth("lg__onlysecret"),
        "empty-bearer": (("authorization", "Bearer "),),
        "basic-scheme": (("authorization", "Basic " + good),),
        "x-api-key-wrong": (("x-api-key", "lg_abc_def"),),
    }[how]
    subject = unique("unauth")
    assert await _all_calls_fail(stubs, md, subject) == {("UNAUTHENTICATED", "UNAUTHENTICATED")}
    # Nothing was stored by the refused publishes.
    assert await query_all(stubs.broker, subject, keyed.md("acme_admin")) == []


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_valid_key_works(keyed: Keyed, stubs: Stubs, header: str) -> None:
    key = keyed.keys["acme_agent"]
    md: Metadata = auth(key) if header == "authorization" else (("x-api-key", key),)
    subject = unique("authok")
    resp = await stubs.broker.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event()), metadata=md, timeout=10
    )
    stored = await query_all(stubs.broker, subject, md)
    assert [s.id for s in stored] == [resp.id]
    got = await stubs.broker.GetEvent(broker_pb2.GetEventRequest(id=resp.id), metadata=md)
    assert got.event.id == resp.id


async def test_revoked_key_stops_working_within_seconds(keyed: Keyed, stubs: Stubs) -> None:
    key = keyed.keys["acme_revoke"]
    subject = unique("revoke")

    async def publish() -> None:
        await stubs.broker.PublishOne(
            broker_pb2.PublishOneRequest(subject=subject, event=event()),
            metadata=auth(key),
            timeout=10,
        )

    await publish()  # works, and is now cached
    out = await asyncio.to_thread(
        lockgate_cli, "keys", "revoke", _key_id(key), "--data-dir", keyed.data_dir
    )
    assert "revoked" in out

    async def refused() -> bool:
        try:
            await publish()
        except grpc.aio.AioRpcError as err:
            assert error_info(err)[:2] == (UNAUTHENTICATED, "CREDENTIAL_REVOKED")
            return True
        return False

    await eventually(refused, timeout=7, interval=0.25, what="the revoked key is refused")
    # Stays refused, on every RPC.
    assert await _all_calls_fail(stubs, auth(key), subject) == {
        ("UNAUTHENTICATED", "CREDENTIAL_REVOKED")
    }


async def test_admin_rpcs_need_the_admin_role(keyed: Keyed, stubs: Stubs) -> None:
    md = keyed.md("acme_agent")
    # The agent may own a durable, but not administer it.
    name = f"mine-{uuid.uuid4().hex[:8]}"
    sub = await subscribe(stubs.broker, md, pattern=unique("perm"), durable=name)
    a = stubs.admin
    calls = [
        a.ListDurables(admin_pb2.ListDurablesRequest(), metadata=md, timeout=10),
        a.GetDurable(admin_pb2.GetDurableRequest(name=name), metadata=md, timeout=10),
        a.DeleteDurable(admin_pb2.DeleteDurableRequest(name=name), metadata=md, timeout=10),
        a.ListDeadLetters(admin_pb2.ListDeadLettersRequest(durable=name), metadata=md, timeout=10),
        a.RedriveDeadLetters(
            admin_pb2.RedriveDeadLettersRequest(durable=name), metadata=md, timeout=10
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert error_info(exc.value)[:2] == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
    # The refused DeleteDurable deleted nothing.
    admin = keyed.md("acme_admin")
    info = await a.GetDurable(admin_pb2.GetDurableRequest(name=name), metadata=admin, timeout=10)
    assert info.durable.name == name and info.durable.connected == 1
    await sub.close()


async def _deliveries_until(sub: Sub, last: int) -> list[broker_pb2.Delivery]:
    """What ``sub`` receives up to and including event ``last``."""
    got: list[broker_pb2.Delivery] = []
    while last not in {d.id for d in got}:
        more = await sub.collect(1, 10)
        assert more, f"event {last} never arrived; got {[d.id for d in got]}"
        got += more
    return got


async def test_orgs_are_isolated(keyed: Keyed, stubs: Stubs) -> None:
    acme, globex = keyed.md("acme_agent"), keyed.md("globex_agent")
    b = stubs.broker
    subject = unique("shared")

    spy = await subscribe(b, globex, pattern=">")
    spy_durable_name = f"spy-{uuid.uuid4().hex[:8]}"
    spy_durable = await subscribe(
        b,
        globex,
        pattern=">",
        durable=spy_durable_name,
        start=broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL),
    )
    acme_sub = await subscribe(b, acme, pattern=subject)

    responses = await publish_batches(b, subject, [[event("secret")] * 1 for _ in range(20)], acme)
    acme_ids = [i for r in responses for i in r.ids]
    assert all(acme_ids)
    assert [d.id for d in await acme_sub.collect(20, 5)] == acme_ids  # acme sees its own

    # globex sees none of it: not in history, not by id, not live, not by replay.
    assert await query_all(b, subject, globex) == []
    assert [e.id for e in await query_all(b, ">", globex) if e.id in acme_ids] == []
    for event_id in acme_ids[:3]:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await b.GetEvent(broker_pb2.GetEventRequest(id=event_id), metadata=globex)
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    # The same subject in globex is another stream: its own event reaches its own spy only.
    own = await b.PublishOne(
        broker_pb2.PublishOneRequest(subject=subject, event=event("globex")),
        metadata=globex,
        timeout=10,
    )
    # Anything leaked to globex's subscribers would have arrived before its own event.
    for watcher in (spy, spy_durable):
        got = await _deliveries_until(watcher, own.id)
        assert [d.id for d in got if d.id in acme_ids] == []
    marker = await assert_no_more(acme_sub, b, subject, acme)
    assert [e.id for e in await query_all(b, subject, acme)] == [*acme_ids, marker]
    assert [e.id for e in await query_all(b, subject, globex)] == [own.id]
    # A request from globex does not reach acme's listener (globex's own spies are gone).
    await spy.close()
    await spy_durable.close()

    async def no_responders() -> bool:
        # Until the broker notices the spies left, the request goes to them and times out.
        try:
            await b.Request(
                broker_pb2.RequestRequest(subject=subject, event=event()),
                metadata=globex,
                timeout=1,
            )
        except grpc.aio.AioRpcError as err:
            return error_info(err)[:2] == (grpc.StatusCode.NOT_FOUND, "NO_RESPONDERS")
        return False

    await eventually(no_responders)
    # Durable names are per org too.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.GetDurable(
            admin_pb2.GetDurableRequest(name=spy_durable_name),
            metadata=keyed.md("acme_admin"),
            timeout=10,
        )
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")
    await acme_sub.close()


async def test_dev_mode_is_off_once_keys_exist(keyed: Keyed, stubs: Stubs) -> None:
    # With keys in the store no caller is the anonymous admin, even on loopback.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.ListDurables(admin_pb2.ListDurablesRequest(), timeout=10)
    assert error_info(exc.value)[:2] == (UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_dev_mode_ends_once_a_key_exists_without_a_restart() -> None:
    """A broker started without keys serves anonymous callers; creating the first key beside
    it (as the README tells an operator to) ends the dev mode within seconds, and the new key
    works at once."""
    with tempfile.TemporaryDirectory(prefix="lockgate-devmode-") as data_dir:
        async with run_broker(data_dir) as rb, grpc.aio.insecure_channel(rb.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            subject = unique("dev")
            assert await publish_one(stub, subject) > 0  # anonymous, dev mode
            key = await asyncio.to_thread(_create_key, data_dir, "acme", "first", "admin")

            async def anonymous_refused() -> bool:
                try:
                    await publish_one(stub, subject)
                except grpc.aio.AioRpcError as exc:
                    code, reason, _ = error_info(exc)
                    assert (code, reason) == (UNAUTHENTICATED, "UNAUTHENTICATED")
                    return True
                raise AssertionError("an anonymous publish is still accepted")

            await eventually(anonymous_refused, timeout=15, what="the end of the dev mode")
            assert await publish_one(stub, subject, metadata=auth(key)) > 0


async def test_creating_a_durable_needs_what_subscribing_needs(keyed: Keyed, stubs: Stubs) -> None:
    """CreateDurable asks what Subscribe(durable=...) and Fetch ask: the right to read the
    pattern; only a webhook durable (the broker calls out) needs the admin role."""
    md = keyed.md("acme_agent")
    name = f"own-{uuid.uuid4().hex[:8]}"
    created = await stubs.admin.CreateDurable(
        admin_pb2.CreateDurableRequest(name=name, pattern=unique("own")), metadata=md, timeout=10
    )
    assert created.durable.name == name
    hook = admin_pb2.CreateDurableRequest(
        name=name + "-hook", pattern=unique("own"), endpoint_url="https://example.com/hook"
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.CreateDurable(hook, metadata=md, timeout=10)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    admin = keyed.md("acme_admin")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.GetDurable(
            admin_pb2.GetDurableRequest(name=name + "-hook"), metadata=admin, timeout=10
        )
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND  # the refusal created nothing


async def _open_streams(
    stub: broker_pb2_grpc.BrokerServiceStub, md: Metadata | None
) -> tuple[Sub, grpc.aio.StreamStreamCall]:
    """A live Subscribe stream and a Publish stream that has had one frame answered."""
    sub = await subscribe(stub, md, pattern=unique("open"))
    pub = stub.Publish(metadata=md)
    await pub.write(broker_pb2.PublishRequest(subject=unique("open"), events=[event()], batch_id=1))
    assert (await asyncio.wait_for(pub.read(), 10)).batch_id == 1
    return sub, pub


async def _ended_unauthenticated(
    sub: Sub, pub: grpc.aio.StreamStreamCall, message: str, reason: str = "UNAUTHENTICATED"
) -> None:
    """Both streams end with UNAUTHENTICATED within the documented 5 s (plus slack), idle."""
    await eventually(lambda: sub.error is not None, timeout=15, what="the Subscribe stream ends")
    assert sub.error is not None
    code, got, _ = error_info(sub.error)
    assert (code, got) == (UNAUTHENTICATED, reason)
    assert message in (sub.error.details() or "")
    # Read without writing: the stream ends by itself (see _all_calls_fail on writing first).
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await asyncio.wait_for(pub.read(), 15)
    assert error_info(exc.value)[:2] == (UNAUTHENTICATED, reason)
    assert message in (exc.value.details() or "")


async def test_revoking_a_key_ends_its_open_streams() -> None:
    """A Publish or Subscribe stream opened before a revocation does not outlive it: both are
    ended, idle, within the documented time; another key's streams go on."""
    with tempfile.TemporaryDirectory(prefix="lockgate-revoke-") as data_dir:
        doomed, kept = await asyncio.gather(
            asyncio.to_thread(_create_key, data_dir, "acme", "doomed"),
            asyncio.to_thread(_create_key, data_dir, "acme", "kept"),
        )
        async with run_broker(data_dir) as rb, grpc.aio.insecure_channel(rb.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            sub, pub = await _open_streams(stub, auth(doomed))
            other_sub, other_pub = await _open_streams(stub, auth(kept))
            out = await asyncio.to_thread(
                lockgate_cli, "keys", "revoke", _key_id(doomed), "--data-dir", data_dir
            )
            assert "revoked" in out
            await _ended_unauthenticated(sub, pub, "revoked", "CREDENTIAL_REVOKED")
            # The other key's streams still publish and deliver.
            subject = unique("kept")
            live = await subscribe(stub, auth(kept), pattern=subject)
            await other_pub.write(
                broker_pb2.PublishRequest(subject=subject, events=[event()], batch_id=2)
            )
            assert (await asyncio.wait_for(other_pub.read(), 10)).batch_id == 2
            assert len(await live.collect(1)) == 1
            assert other_sub.error is None
            await other_pub.done_writing()
            await asyncio.gather(sub.close(), other_sub.close(), live.close())


async def test_the_end_of_the_dev_mode_ends_anonymous_open_streams() -> None:
    """Streams opened anonymously in the dev mode end once a key exists, like new calls."""
    with tempfile.TemporaryDirectory(prefix="lockgate-devstreams-") as data_dir:
        async with run_broker(data_dir) as rb, grpc.aio.insecure_channel(rb.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            sub, pub = await _open_streams(stub, None)
            await asyncio.to_thread(_create_key, data_dir, "acme", "first", "admin")
            await _ended_unauthenticated(sub, pub, "dev mode ended")
            await sub.close()


async def test_concurrent_key_creation_on_a_new_data_dir() -> None:
    """Several `lockgate keys create` at once on a fresh data dir all succeed (they raced on
    switching the new file to WAL and one failed with 'database is locked')."""
    with tempfile.TemporaryDirectory(prefix="lockgate-keys-") as data_dir:
        keys = await asyncio.gather(
            *(asyncio.to_thread(_create_key, data_dir, "acme", f"a{i}") for i in range(6))
        )
        assert len(set(keys)) == 6
