"""The dashboard's page and admin reads on the HTTP gateway (in process): what each shows,
that a bad credential gets 401 and a key without the role 403 (problem+json), the redrive,
the policy diff, and that the page's files are served and nothing beside them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from lockgate.broker import admin_view
from lockgate.broker.api import LocalAPI
from lockgate.broker.auth import Authenticator, create_key
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.policies import PolicyManager
from lockgate.broker.policyhook import PolicyGate
from lockgate.broker.store import PolicyVersionRecord
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.gateways._dashboard_http import DIST
from lockgate.gateways._site import start_site
from lockgate.gateways.http import build_app
from tests.gateways.gw_kit import unique
from tests.support import eventually

WHO = {
    "admin": ("default", "ops", ("admin",)),
    "org-admin": ("acme", "lead", ("org-admin",)),
    "agent": ("acme", "worker", ()),
}
V1 = 'policy secrets on "secret.>" {\n  closed: deny publish because "secrets are closed"\n}\n'
V2 = V1.replace("secrets are closed", "closed for now")
ACTIVITY = ["subjects", "subscriptions", "denials", "nodes"]


@dataclass
class Env:
    url: str
    http: aiohttp.ClientSession
    keys: dict[str, str]
    broker: Broker
    api: LocalAPI

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def get(self, who: str, path: str, status: int = 200) -> dict[str, object]:
        async with self.http.get(self.url + path, headers=self.h(who)) as resp:
            doc: dict[str, object] = await resp.json(content_type=None)
            assert resp.status == status, doc
            return doc

    async def post(self, who: str, path: str, body: object, status: int = 200) -> dict[str, object]:
        async with self.http.post(self.url + path, json=body, headers=self.h(who)) as resp:
            doc: dict[str, object] = await resp.json(content_type=None)
            assert resp.status == status, doc
            return doc

    async def publish(self, who: str, subject: str, n: int = 1) -> aiohttp.ClientResponse:
        events = [
            {"specversion": "1.0", "id": unique("e"), "source": "t", "type": "t", "data": {}}
            for _ in range(n)
        ]
        headers = {**self.h(who), "Content-Type": "application/cloudevents-batch+json"}
        async with self.http.post(
            f"{self.url}/v1/subjects/{subject}/events", json=events, headers=headers
        ) as resp:
            await resp.read()
            return resp


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    gate = PolicyGate()
    store = SqliteStore(str(tmp_path), fsync="never")
    broker = Broker(Config(data_dir=str(tmp_path), fsync="never"), store, gate)
    await broker.start()
    policies = PolicyManager(gate, store)
    await policies.apply({"secrets.policy": V1}, "test")
    await policies.apply({"secrets.policy": V2}, "test")
    keys = {}
    for name, (org, agent, roles) in WHO.items():
        keys[name], _ = await create_key(store, org, agent, roles)
    keys["bad"] = "lg_not_a_key"
    api = LocalAPI(broker, Authenticator(store, dev_mode=False))
    runner, port = await start_site(build_app(api), "127.0.0.1:0")
    http = aiohttp.ClientSession()
    try:
        yield Env(f"http://127.0.0.1:{port}", http, keys, broker, api)
    finally:
        await http.close()
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await policies.stop()
        await broker.stop()


@pytest.mark.parametrize("name", ACTIVITY)
async def test_activity_refuses_a_bad_credential_and_a_non_admin(env: Env, name: str) -> None:
    path = f"/v1/activity/{name}"
    async with env.http.get(env.url + path, headers=env.h("bad")) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json(content_type=None))["reason"] == "UNAUTHENTICATED"
    for who in ("agent", "org-admin"):
        doc = await env.get(who, path, 403)
        assert doc["reason"] == "PERMISSION_DENIED"
    await env.get("admin", path)


async def test_subjects_and_denials_show_traffic_and_the_rule(env: Env) -> None:
    ok = await env.publish("agent", "orders.new", 5)
    assert ok.status == 200
    refused = await env.publish("agent", "secret.plans", 2)
    assert refused.status == 403
    rates = await env.get("admin", "/v1/activity/subjects")
    (row,) = [s for s in rates["subjects"] if s["subject"] == "orders.new"]  # type: ignore[attr-defined]
    assert row["org"] == "acme" and row["total"] == 5 and sum(row["counts"]) == 5
    assert len(row["counts"]) == rates["buckets"]
    doc = await env.get("admin", "/v1/activity/denials?limit=10")
    (d,) = doc["denials"]  # type: ignore[misc]
    assert (d["org"], d["agent"], d["subject"], d["count"]) == ("acme", "worker", "secret.plans", 2)
    assert d["rule"] == "secrets.policy:2" and d["reason"] == "POLICY_DENIED"
    bad = await env.get("admin", "/v1/activity/denials?limit=0", 400)
    assert bad["reason"] == "INVALID_PARAMETER"


async def test_dead_letters_are_listed_and_redriven(env: Env) -> None:
    durable, subject = unique("d"), unique("dl.")
    created = await env.http.put(
        f"{env.url}/v1/subscriptions/{durable}",
        json={"pattern": subject, "max_deliveries": 1, "start": "new"},
        headers=env.h("agent"),
    )
    assert created.status == 200
    assert (await env.publish("agent", subject)).status == 200
    polled = await env.get("agent", f"/v1/subscriptions/{durable}/events?wait=5s")
    (event_id,) = [e["id"] for e in polled["events"]]  # type: ignore[attr-defined]
    await env.api.acknowledge(env.keys["agent"], durable, [], [], term_ids=[int(event_id)])
    subs = await env.get("admin", "/v1/activity/subscriptions")
    (view,) = [s for s in subs["subscriptions"] if s["name"] == durable]  # type: ignore[attr-defined]
    assert (view["kind"], view["org"], view["pattern"]) == ("durable", "acme", subject)
    assert view["pending"] == 0 and 0 <= view["lag"] <= 2  # log batches, never ids

    # The org's own org-admin sees its dead letters; the broker's admin names the org.
    mine = await env.get("org-admin", f"/v1/deadletters?durable={durable}")
    theirs = await env.get("admin", f"/v1/deadletters?org=acme&durable={durable}")
    assert mine["dead_letters"] == theirs["dead_letters"]
    (dl,) = theirs["dead_letters"]  # type: ignore[misc]
    assert dl["id"] == event_id and dl["event"]["subject"] == subject and dl["attempts"] == 1
    assert (await env.get("agent", "/v1/deadletters", 403))["reason"] == "PERMISSION_DENIED"
    assert (await env.get("org-admin", "/v1/deadletters?org=globex", 403))["reason"]

    for body, status in (
        ({}, 400),
        ({"durable": durable, "ids": "x"}, 400),
        ({"durable": unique("nope"), "org": "acme"}, 404),
    ):
        await env.post("admin", "/v1/deadletters/redrive", body, status)
    await env.post("agent", "/v1/deadletters/redrive", {"durable": durable}, 403)
    # A huge name is not echoed back whole (the refusal stays small).
    huge = await env.post("admin", "/v1/deadletters/redrive", {"durable": "x" * 100_000}, 404)
    assert len(str(huge)) < 2000
    huge = await env.get("org-admin", "/v1/deadletters?org=" + "y" * 7000, 403)
    assert len(str(huge)) < 2000
    moved = await env.post(
        "admin", "/v1/deadletters/redrive", {"org": "acme", "durable": durable, "ids": [event_id]}
    )
    assert moved == {"count": 1}
    after = await env.get("admin", f"/v1/deadletters?org=acme&durable={durable}")
    assert after["dead_letters"] == []
    again = await env.get("agent", f"/v1/subscriptions/{durable}/events?wait=5s")
    assert [e["id"] for e in again["events"]] == [event_id]  # type: ignore[attr-defined]


async def test_policy_versions_and_their_diff(env: Env) -> None:
    doc = await env.get("admin", "/v1/policies/versions?global=true")
    versions = doc["versions"]
    assert [v["active"] for v in versions] == [True, False]  # type: ignore[attr-defined]
    new, old = (v["version"] for v in versions)  # type: ignore[attr-defined]
    diff = await env.get("admin", "/v1/policies/diff?global=true")
    assert (diff["from"], diff["to"]) == (old, new)
    text = str(diff["diff"])
    assert '-  closed: deny publish because "secrets are closed"' in text
    assert '+  closed: deny publish because "closed for now"' in text
    back = await env.get("admin", f"/v1/policies/diff?global=true&from={new}&to={old}")
    assert '+  closed: deny publish because "secrets are closed"' in str(back["diff"])
    missing = await env.get("admin", "/v1/policies/diff?global=true&from=nope", 404)
    assert missing["reason"] == "UNKNOWN_VERSION"
    assert (await env.get("admin", "/v1/policies/versions?global=maybe", 400))["reason"]
    await env.get("admin", "/v1/policies/versions?global=true&org=acme", 400)
    # An org's admin reads its own org's set, never the global one.
    assert (await env.get("org-admin", "/v1/policies/versions"))["versions"] == []
    await env.get("org-admin", "/v1/policies/versions?global=true", 403)
    await env.get("agent", "/v1/policies/versions", 403)
    none = await env.get("org-admin", "/v1/policies/diff", 404)
    assert none["reason"] == "UNKNOWN_VERSION"


async def test_nodes_name_this_one(env: Env) -> None:
    doc = await env.get("admin", "/v1/activity/nodes")
    assert doc["node"] == {"node_id": env.broker.node_id, "store": "sqlite", "history_lag": None}
    assert doc["peers"] == []
    (me,) = doc["nodes"]  # embedded: the roster is this node alone
    assert me["node_id"] == env.broker.node_id and me["this_node"] is True
    assert me["backbone"] == "local" and me["worker_id"] == 0 and me["version"]


async def test_the_page_is_served_and_nothing_beside_it(env: Env) -> None:
    async with env.http.get(env.url + "/dashboard", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dashboard/"
    async with env.http.get(env.url + "/dashboard/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assets = sorted(p.name for p in (DIST / "assets").iterdir())
    assert assets and all(f"./assets/{a}" in page for a in assets)
    for asset in assets:
        async with env.http.get(f"{env.url}/dashboard/assets/{asset}") as resp:
            assert resp.status == 200
            assert "immutable" in resp.headers["Cache-Control"]
    odd = ("/dashboard/%00", "/dashboard/index.html%00.js", "/dashboard/" + "a" * 5000)
    for path in ("/dashboard/nope.js", "/dashboard/..%2f_web.py", "/dashboard/%2e%2e/x.py", *odd):
        async with env.http.get(env.url + path) as resp:
            assert resp.status == 404, path
            assert resp.content_type == "application/problem+json"


def test_a_remote_gateway_has_no_dashboard() -> None:
    """The reads are the in-process broker's: a gateway in front of a remote broker (any
    API but LocalAPI) registers none of these routes, so they answer 404 there."""
    from typing import cast

    from lockgate.broker.api import BrokerAPI

    app = build_app(cast(BrokerAPI, object()))
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert not any(p.startswith(("/dashboard", "/v1/activity", "/v1/deadletters")) for p in paths)


async def test_a_costly_diff_does_not_hold_up_other_requests(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """difflib is quadratic on many lines repeating a few (two 40 KB comment-only versions
    of an org's set take seconds): the diff runs off the event loop, so other requests are
    answered meanwhile. The diff here waits until the other request was answered."""
    started, release = threading.Event(), threading.Event()
    real = admin_view.diff_versions

    def slow(a: PolicyVersionRecord, b: PolicyVersionRecord) -> str:
        started.set()
        release.wait(10)  # on the event loop this would hold up everything (and fail below)
        return real(a, b)

    monkeypatch.setattr(admin_view, "diff_versions", slow)
    diff = asyncio.create_task(env.get("admin", "/v1/policies/diff?global=true"))

    async def in_the_diff() -> bool:
        return started.is_set()

    await eventually(in_the_diff)
    await env.get("admin", "/v1/activity/nodes")
    assert not diff.done()
    release.set()
    assert "closed for now" in str((await diff)["diff"])
