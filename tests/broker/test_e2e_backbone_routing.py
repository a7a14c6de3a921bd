"""The backbone registry routes an org's traffic end to end: `lockgate serve` nodes on one
NATS (their own backbone), a second independent JetStream server started here, the registry
written through the public client's admin API, and the org's events published and received
with the client: they land in the second server's stream only, other orgs' in the own one,
and the history still finds them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from lockgate.clients import Backbone, Client, Message
from tests.broker.test_e2e_cluster import _client, _cluster, _collect, _has, _warm
from tests.support.nats_servers import nats_cluster
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e


async def _log_subjects(url: str, stream: str) -> dict[str, int]:
    """The stored subjects of the stream ``stream`` on ``url`` and their message counts."""
    nc = await nats.connect(url)
    try:
        msg = await nc.request(
            f"$JS.API.STREAM.INFO.{stream}", json.dumps({"subjects_filter": ">"}).encode(), 5
        )
    finally:
        await nc.close()
    info = json.loads(msg.data)
    return {} if "error" in info else dict(info.get("state", {}).get("subjects") or {})


async def _orgs_logged(url: str, stream: str) -> set[str]:
    """The orgs whose events the stream holds (subjects ``<root>.<org>.…``)."""
    return {s.split(".")[1] for s in await _log_subjects(url, stream)}


async def test_an_org_pinned_through_the_api_travels_over_its_backbone(
    tmp_path: Path, nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    async with nats_cluster(tmp_path) as b1, _cluster(nats_url, pg_fresh_dsn, redis_url) as c:
        n0, n1, _ = c.nodes
        admin = await _client(n0, c.keys["admin"])
        pub = await _client(n0, c.keys["acme"])
        sub = await _client(n1, c.keys["acme"])
        globex = await _client(n1, c.keys["globex"])
        try:
            created = await admin.admin.create_backbone(Backbone("b1", b1.server_url(0), ("acme",)))
            assert created.org_ids == ("acme",)
            got: list[Message] = []
            task = asyncio.create_task(_collect(await sub.subscription("orders.>"), got))
            # Until every node follows the registry, acme may still go over the own one.
            await _warm(pub, "orders.probe", got)
            await eventually(lambda: _logged_on_b1(b1.server_url(0), c.stream), timeout=15)
            own_before = await _log_subjects(nats_url, c.stream)
            ids = [await pub.publish("orders.created", {"n": n}) for n in range(3)]
            marker = await globex.publish("orders.created", {"globex": True})
            await eventually(lambda: {m.id for m in got} >= set(ids))
            task.cancel()
            own_after = await _log_subjects(nats_url, c.stream)
            acme_own = {k: v for k, v in own_after.items() if k.split(".")[1] == "acme"}
            assert acme_own == {k: v for k, v in own_before.items() if k in acme_own}
            assert "globex" in {k.split(".")[1] for k in own_after}  # on the own backbone
            assert await _orgs_logged(b1.server_url(0), c.stream) == {"acme"}

            async def history(client: Client) -> list[int]:
                return [e.id async for e in client.query_events("orders.>")]

            await eventually(lambda: _has(history(sub), set(ids)), timeout=15)
            assert marker not in await history(sub)
        finally:
            for client in (admin, pub, sub, globex):
                await client.close()


async def _logged_on_b1(url: str, stream: str) -> bool:
    return "acme" in await _orgs_logged(url, stream)
