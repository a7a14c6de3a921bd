"""Per-org quotas over gRPC against a real broker (issue 8, resource exhaustion): a plain key
of one org cannot create durables, subscriptions, connections or streams beyond its quota,
is refused with RESOURCE_EXHAUSTED / QUOTA_EXCEEDED naming the quota and its limit, and
another org keeps working. Many streams on one connection end cleanly at the limit."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import duration_pb2

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import (
    Metadata,
    Stubs,
    auth,
    error_info,
    event,
    lockgate_cli,
    open_call,
    publish_batches,
    unique,
)
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

QUOTAS = {
    "max_durables_per_org": 5,
    "max_subscriptions_per_org": 8,
    "max_connections_per_org": 3,
    "max_streams_per_connection": 4,
}


@dataclass
class Quoted:
    broker: RunningBroker
    evil: Metadata
    acme: Metadata


def _key(data_dir: str, org: str) -> str:
    out = lockgate_cli("keys", "create", "--org", org, "--agent", "a", "--data-dir", data_dir)
    return out.strip().splitlines()[0]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def quoted() -> AsyncIterator[Quoted]:
    with tempfile.TemporaryDirectory(prefix="lockgate-quota-") as data_dir:
        evil, acme = await asyncio.gather(
            asyncio.to_thread(_key, data_dir, "evil"), asyncio.to_thread(_key, data_dir, "acme")
        )
        conf = Path(data_dir) / "quotas.toml"
        conf.write_text("[broker]\n" + "".join(f"{k} = {v}\n" for k, v in QUOTAS.items()))
        async with run_broker(data_dir=data_dir, extra_args=["--config", str(conf)]) as b:
            yield Quoted(b, auth(evil), auth(acme))


# Channels to one target share their connection unless each has its own subchannel pool.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@contextlib.asynccontextmanager
async def channel(q: Quoted) -> AsyncIterator[Stubs]:
    """Stubs on a connection of their own."""
    async with grpc.aio.insecure_channel(q.broker.target, options=OWN_CONNECTION) as ch:
        yield Stubs(ch)


def _assert_quota(err: grpc.aio.AioRpcError, quota: str) -> None:
    code, reason, meta = error_info(err)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"), err
    assert (meta.get("quota"), meta.get("limit")) == (quota, str(QUOTAS[quota]))
    assert meta.get("hint")


async def _refused_open(stubs: Stubs, md: Metadata, quota: str, **open_kw: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await open_call(stubs.broker, md, **open_kw)
    _assert_quota(exc.value, quota)


async def _close(*calls: grpc.aio.StreamStreamCall) -> None:
    for call in calls:
        call.cancel()


async def test_durables_per_org_through_fetch(quoted: Quoted) -> None:
    async with channel(quoted) as s:
        pattern = unique("quota")
        for n in range(QUOTAS["max_durables_per_org"]):
            req = broker_pb2.FetchRequest(durable=f"d{n}", pattern=pattern, max_events=1)
            await s.broker.Fetch(req, metadata=quoted.evil, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            req = broker_pb2.FetchRequest(durable="one-more", pattern=pattern, max_events=1)
            await s.broker.Fetch(req, metadata=quoted.evil, timeout=10)
        _assert_quota(exc.value, "max_durables_per_org")
        # A durable stream that would create one is refused the same way.
        await _refused_open(
            s, quoted.evil, "max_durables_per_org", pattern=pattern, durable="one-more"
        )
        # The existing ones still serve, and the other org creates its own and publishes.
        req = broker_pb2.FetchRequest(durable="d0", max_events=1)
        await s.broker.Fetch(req, metadata=quoted.evil, timeout=10)
        acme_pattern = unique("acme")
        req = broker_pb2.FetchRequest(durable="mine", pattern=acme_pattern, max_events=1)
        await s.broker.Fetch(req, metadata=quoted.acme, timeout=10)
        [resp] = await publish_batches(s.broker, acme_pattern, [[event()]], quoted.acme)
        assert not resp.errors and resp.ids[0]
        req = broker_pb2.FetchRequest(durable="mine", max_events=1, wait=_seconds(5))
        got = await s.broker.Fetch(req, metadata=quoted.acme, timeout=10)
        assert [d.id for d in got.deliveries] == list(resp.ids)


def _seconds(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(s * 1000))
    return d


async def test_streams_per_connection(quoted: Quoted) -> None:
    limit = QUOTAS["max_streams_per_connection"]
    async with channel(quoted) as s:
        subject = unique("quota")
        calls = [(await open_call(s.broker, quoted.acme, pattern=subject))[0] for _ in range(limit)]
        await _refused_open(s, quoted.acme, "max_streams_per_connection", pattern=subject)
        # A Publish stream is a stream too (counted from its first frame).
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await publish_batches(s.broker, subject, [[event()]], quoted.acme)
        _assert_quota(exc.value, "max_streams_per_connection")
        # Another connection of the same org is not affected.
        async with channel(quoted) as other:
            await publish_batches(other.broker, subject, [[event()]], quoted.acme)
        # Closing one makes room (once the broker saw the cancel).
        await _close(calls.pop())

        async def reopen() -> grpc.aio.StreamStreamCall:
            return (await open_call(s.broker, quoted.acme, pattern=subject))[0]

        calls.append(await eventually(reopen, timeout=10))
        await _close(*calls)


async def test_connections_per_org(quoted: Quoted) -> None:
    limit = QUOTAS["max_connections_per_org"]
    async with contextlib.AsyncExitStack() as stack:
        held = []
        for _ in range(limit):
            s = await stack.enter_async_context(channel(quoted))
            held.append((await open_call(s.broker, quoted.evil, pattern=unique("quota")))[0])
        extra = await stack.enter_async_context(channel(quoted))
        await _refused_open(extra, quoted.evil, "max_connections_per_org", pattern="a.b")
        # The other org's connection is its own.
        mine, _ = await open_call(extra.broker, quoted.acme, pattern=unique("acme"))
        await _close(mine, *held)


async def test_subscriptions_per_org(quoted: Quoted) -> None:
    limit = QUOTAS["max_subscriptions_per_org"]
    per_conn = QUOTAS["max_streams_per_connection"]
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(channel(quoted)) for _ in range(3)]
        held = []
        for n in range(limit):
            s = conns[n // per_conn]
            held.append((await open_call(s.broker, quoted.acme, pattern=unique("sub")))[0])
        await _refused_open(conns[2], quoted.acme, "max_subscriptions_per_org", pattern="a.b")
        await _close(*held)


async def test_many_streams_on_one_connection_end_cleanly(broker: RunningBroker) -> None:
    """A thousand Subscribe streams opened in two bursts on one connection of the default
    broker: exactly max_streams_per_connection (100) live, every other one is refused with
    RESOURCE_EXHAUSTED and the quota's reason, none INTERNAL (they were, unbounded)."""
    async with grpc.aio.insecure_channel(broker.target, options=OWN_CONNECTION) as ch:
        s = Stubs(ch)
        await ch.channel_ready()
        subject = unique("many")
        outcomes: list[object] = []
        for _ in range(2):
            outcomes += await asyncio.gather(
                *(open_call(s.broker, None, pattern=subject) for _ in range(500)),
                return_exceptions=True,
            )
        opened = [o for o in outcomes if isinstance(o, tuple)]
        reasons = {
            error_info(o)[:2] if isinstance(o, grpc.aio.AioRpcError) else repr(o)
            for o in outcomes
            if not isinstance(o, tuple)
        }
        assert reasons == {(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED")}, reasons
        assert len(opened) == 100
        # The live ones deliver (published on another connection: this one is full).
        async with grpc.aio.insecure_channel(broker.target, options=OWN_CONNECTION) as other:
            [resp] = await publish_batches(Stubs(other).broker, subject, [[event()]])
        got = await asyncio.gather(*(asyncio.wait_for(call.read(), 10) for call, _ in opened))
        assert all([d.id for d in r.deliveries] == list(resp.ids) for r in got)
        await _close(*(call for call, _ in opened))
