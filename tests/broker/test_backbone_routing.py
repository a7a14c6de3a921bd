"""Each org over the backbone the registry pins it to, with real servers: three independent
JetStream servers (the nodes' own backbone, B1 and B2), PostgreSQL and Redis, and two
cluster nodes in this process built from their settings as `lockgate serve` builds them.
acme is pinned to B1 and globex to B2; initech stays on the own backbone. Each org's log
(JetStream stream contents) and fan-out (core NATS subjects) are seen on its backbone only;
re-pinning acme moves its new traffic to B2 without restarting a node; a pinned backbone
that cannot be reached fails that org's publishes with UNAVAILABLE, never another org's."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client

from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.errors import Unavailable
from lockgate.broker.factory import Backends, build_backends
from lockgate.broker.node import Broker
from lockgate.broker.store import BackboneRecord
from lockgate.broker.store.cluster import ClusterStore
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from tests.broker.test_nodes_on_nats import ids_in
from tests.support import eventually
from tests.support.nats_servers import free_port, nats_cluster

pytestmark = [pytest.mark.nats, pytest.mark.postgres, pytest.mark.redis]

ACME = Principal("acme", "a1", frozenset())
GLOBEX = Principal("globex", "g1", frozenset())
INITECH = Principal("initech", "i1", frozenset())


def event(eid: str) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=eid, source="/t", spec_version="1.0", type="t")


@dataclass
class Server:
    """One JetStream server and a spy connection recording the fan-out subjects on it."""

    url: str
    spy: Client
    fanned: list[str]

    async def log_subjects(self) -> dict[str, int]:
        """The log stream's stored subjects and their message counts."""
        msg = await self.spy.request(
            "$JS.API.STREAM.INFO.LOCKGATE_LOG",
            json.dumps({"subjects_filter": ">"}).encode(),
            timeout=5,
        )
        info = json.loads(msg.data)
        return dict(info.get("state", {}).get("subjects") or {}) if "error" not in info else {}

    async def orgs_logged(self) -> set[str]:
        return {s.split(".")[1] for s in await self.log_subjects()}

    def orgs_fanned(self) -> set[str]:
        return {s.split(".")[1] for s in self.fanned}


@dataclass
class Cluster:
    own: Server
    b1: Server
    b2: Server
    nodes: list[Broker]


async def _server(stack: AsyncExitStack, root: Path) -> Server:
    root.mkdir()
    servers = await stack.enter_async_context(nats_cluster(root))
    url = servers.server_url(0)
    spy = await nats.connect(url)
    stack.push_async_callback(spy.close)
    fanned: list[str] = []

    async def record(msg: nats.aio.msg.Msg) -> None:
        fanned.append(msg.subject)

    await spy.subscribe("lgfan.>", cb=record)
    await spy.subscribe("lgreq.>", cb=record)
    await spy.flush()
    return Server(url, spy, fanned)


async def _node(stack: AsyncExitStack, config: Config) -> Broker:
    """A node composed as `lockgate serve` composes it (broker.app)."""
    b: Backends = build_backends(config)
    broker = Broker(config, b.store, dedup=b.dedup, backbone=b.backbone, leases=b.leases)
    await b.open()
    stack.push_async_callback(b.close)
    await broker.start()
    stack.push_async_callback(broker.stop)
    return broker


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, pg_fresh_dsn: str, redis_url: str) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        own, b1, b2 = [await _server(stack, tmp_path / n) for n in ("own", "b1", "b2")]
        prefix = f"lockgate-test:{secrets.token_hex(6)}:"
        nodes = []
        for n in range(2):
            config = Config(
                data_dir=str(tmp_path / f"node{n}"),
                backbone=own.url,
                store=pg_fresh_dsn,
                limiter=redis_url,
                limiter_prefix=prefix,
            )
            nodes.append(await _node(stack, config))
        yield Cluster(own, b1, b2, nodes)


async def publish(node: Broker, who: Principal, tag: str, n: int = 2) -> list[int]:
    out = await node.publish(who, "orders.created", [event(f"{tag}-{i}") for i in range(n)])
    assert out.errors == []
    return out.ids


def routed_to(node: Broker, org: str) -> str:
    store = node.store
    assert isinstance(store, ClusterStore)
    return store.routes.links.endpoint(org)


async def test_each_org_travels_over_its_own_backbone_and_follows_a_repin(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    own, b1, b2 = cluster.own, cluster.b1, cluster.b2
    await a.registry.create(BackboneRecord("b1", b1.url, orgs=("acme",)))
    await a.registry.create(BackboneRecord("b2", b2.url, orgs=("globex",)))
    await eventually(
        lambda: routed_to(b, "acme") == b1.url and routed_to(b, "globex") == b2.url,
        what="node b follows the registry",
    )
    who = {"acme": ACME, "globex": GLOBEX, "initech": INITECH}
    subs = {org: await b.subscribe_ephemeral(p, "orders.>", "") for org, p in who.items()}
    durable = await b.subscribe_durable(ACME, "d", "orders.>")
    sent = {org: await publish(a, p, org) for org, p in who.items()}
    seen: dict[str, list[int]] = {org: [] for org in who}

    async def all_delivered() -> bool:
        for org, sub in subs.items():
            await ids_in(sub, seen[org])
        return all(seen[org] == sent[org] for org in who)

    await eventually(all_delivered, what="every org's events reach the other node")
    assert await own.orgs_logged() == {"initech"}
    assert await b1.orgs_logged() == {"acme"}
    assert await b2.orgs_logged() == {"globex"}
    assert own.orgs_fanned() == {"initech"}
    assert b1.orgs_fanned() == {"acme"}
    assert b2.orgs_fanned() == {"globex"}
    got: list[int] = []

    async def durable_has(ids: list[int]) -> bool:
        while len(got) < len(ids):
            body = await asyncio.wait_for(durable.outbox.take(), 10)
            assert body is not None
            got.extend(d.id for d in broker_pb2.SubscribeResponse.FromString(body).deliveries)
        return got[: len(ids)] == ids

    assert await durable_has(sent["acme"])

    async def logged(org: str, ids: list[int]) -> bool:
        events, _ = await b.history.query(org, ">")
        return {e.id for e in events} >= set(ids)

    for org in who:  # the history (PostgreSQL) holds every backbone's events
        await eventually(lambda org=org: logged(org, sent[org]), what=f"{org} in history")

    # Re-pin acme to B2, live: its new traffic (log, fan-out, the durable) goes there.
    await a.registry.update(BackboneRecord("b1", b1.url, orgs=()))
    await a.registry.update(BackboneRecord("b2", b2.url, orgs=("globex", "acme")))
    for node in (a, b):
        await eventually(lambda node=node: routed_to(node, "acme") == b2.url, what="re-pinned")
    b1_acme = await b1.log_subjects()
    fanned_b1 = len(b1.fanned)
    later = await publish(a, ACME, "later", 3)

    async def acme_again() -> bool:
        return (await ids_in(subs["acme"], seen["acme"]))[-3:] == later

    await eventually(acme_again, what="acme's subscriber hears it over B2")
    assert await durable_has(sent["acme"] + later)
    assert await b1.log_subjects() == b1_acme  # nothing new on B1
    assert len(b1.fanned) == fanned_b1
    assert await b2.orgs_logged() == {"globex", "acme"}
    assert "acme" in b2.orgs_fanned()
    await eventually(lambda: logged("acme", sent["acme"] + later), what="history keeps all")

    def b1_closed() -> bool:
        for node in (a, b):
            store = node.store
            assert isinstance(store, ClusterStore)
            if store.routes.links.opened(b1.url) is not None:
                return False
        return True

    await eventually(b1_closed, what="no org uses B1: its links close")

    # Unpinned: acme goes back to the nodes' own backbone (a log numbered below B2's).
    await a.registry.update(BackboneRecord("b2", b2.url, orgs=("globex",)))
    for node in (a, b):
        await eventually(lambda node=node: routed_to(node, "acme") == "", what="unpinned")
    last = await publish(a, ACME, "back", 2)

    async def acme_home() -> bool:
        return (await ids_in(subs["acme"], seen["acme"]))[-2:] == last

    await eventually(acme_home, what="acme's subscriber hears it over the own backbone")
    assert await durable_has(sent["acme"] + later + last)
    assert await own.orgs_logged() == {"initech", "acme"}


async def test_an_unreachable_pinned_backbone_fails_only_its_orgs_publishes(
    cluster: Cluster,
) -> None:
    a, _ = cluster.nodes
    dead = f"nats://127.0.0.1:{free_port()}"  # nobody listens there
    await a.registry.create(BackboneRecord("gone", dead, orgs=("globex",)))
    await a.registry.create(BackboneRecord("b1", cluster.b1.url, orgs=("acme",)))
    async with asyncio.timeout(30):  # the connect bound, not for ever
        with pytest.raises(Unavailable) as exc:
            await a.publish(GLOBEX, "orders.created", [event("g")])
    assert exc.value.metadata["backbone"] == "gone" and "globex" in exc.value.message
    with pytest.raises(Unavailable):  # again: at once, while it retries in the background
        await a.publish(GLOBEX, "orders.created", [event("g2")])
    with pytest.raises(Unavailable):
        await a.subscribe_ephemeral(GLOBEX, "orders.>", "")
    await publish(a, ACME, "fine")  # other orgs carry on
    await publish(a, INITECH, "fine")
    await a.subscribe_ephemeral(ACME, "orders.>", "")
    assert await cluster.b1.orgs_logged() == {"acme"}
