"""The roles table on the HTTP and WebSocket gateway: every route of the app's router, with
each built-in role, is refused for its role exactly when ``broker.permissions`` says so.

The routes are enumerated from the router, so a new route without an entry in
``HTTP_ACTIONS`` fails here. The broker runs in this process with keys (no dev mode).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lockgate.broker.api import LocalAPI
from lockgate.broker.auth import Authenticator, Principal, create_key
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.permissions import HTTP_ACTIONS, WS_ACTIONS, Permissions
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.gateways._site import start_site
from lockgate.gateways.http import build_app
from lockgate.gateways.websocket import WsSettings, add_ws_route
from tests.gateways.gw_kit import unique

WHO = {
    "admin": ("default", "ops", ("admin",)),
    "legacy-admin": ("evil", "boss", ("admin",)),
    "org-admin": ("acme", "lead", ("org-admin",)),
    "agent": ("acme", "worker", ()),
}


@dataclass
class Env:
    app: web.Application
    url: str
    session: aiohttp.ClientSession
    keys: dict[str, str]


@contextlib.asynccontextmanager
async def _env(tmp: Path) -> AsyncIterator[Env]:
    store = SqliteStore(str(tmp), fsync="never")
    broker = Broker(Config(data_dir=str(tmp), fsync="never", webhook_allow_private=True), store)
    await broker.start()
    keys = {}
    for name, (org, agent, roles) in WHO.items():
        keys[name], _ = await create_key(store, org, agent, roles)
    api = LocalAPI(broker, Authenticator(store, dev_mode=False))
    app = build_app(api)
    add_ws_route(app, api, WsSettings(heartbeat=1.0))
    runner, port = await start_site(app, "127.0.0.1:0")
    session = aiohttp.ClientSession()
    try:
        yield Env(app, f"http://127.0.0.1:{port}", session, keys)
    finally:
        await session.close()
        await runner.cleanup()
        await broker.stop()


def _routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one beside each GET
            continue
        assert route.resource is not None
        out.add((route.method, route.resource.canonical))
    return out


def _allowed(who: str, action: str) -> bool:
    org, agent, roles = WHO[who]
    return Permissions("default").allows(Principal(org, agent, frozenset(roles)), action, org)


_CE = {"specversion": "1.0", "id": "1", "source": "t", "type": "t", "data": {"n": 1}}


def _call(method: str, path: str) -> tuple[str, dict[str, object] | None]:
    """A concrete path and JSON body for a route."""
    subject, durable = unique("roles."), unique("d")
    concrete = path.replace("{subject}", subject).replace("{id}", "1").replace("{durable}", durable)
    body: dict[str, object] | None = None
    if path == "/v1/subscriptions/{durable}" and method == "PUT":
        body = {"pattern": subject}
    elif path.endswith("/acks"):
        body = {"ack": []}
    elif path.endswith("/events") and method == "POST":
        body = _CE
    elif path.startswith("/v1/backbones") and method in ("POST", "PUT"):
        body = {"id": unique("bb").replace(".", "-"), "endpoint": "nats://127.0.0.1:4222"}
    elif path == "/v1/config" and method == "PATCH":
        body = {"changes": [{"name": "backoff", "value": "4"}]}
    elif path == "/v1/config/rollback":
        body = {}
    elif path == "/v1/deadletters/redrive":
        body = {"durable": durable}
    return concrete + ("?wait=0s" if concrete.endswith("/events") and method == "GET" else ""), body


async def _refused_for_role(env: Env, who: str, method: str, path: str, body: object) -> bool:
    headers = {"Authorization": f"Bearer {env.keys[who]}"}
    if path.endswith("/events") and method == "POST":
        headers["Content-Type"] = "application/cloudevents+json"
    elif body is not None:
        headers["Content-Type"] = "application/json"
    async with env.session.request(
        method, env.url + path, data=json.dumps(body) if body is not None else None, headers=headers
    ) as resp:
        if resp.status == 200 and path == "/metrics":  # the Prometheus text, not JSON
            return False
        doc = await resp.json(content_type=None)
        assert resp.status not in (400, 415), doc  # well-formed: it reached the broker
        if resp.status != 403:
            return False
        return bool(doc.get("reason") == "PERMISSION_DENIED")


async def test_every_route_has_an_action_and_each_role_gets_it(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        assert _routes(env.app) == set(HTTP_ACTIONS)
        mismatches = []
        for who in WHO:
            for method, path in sorted(HTTP_ACTIONS):
                action = HTTP_ACTIONS[(method, path)]
                if not action:
                    continue  # the WebSocket route: each frame is checked below
                concrete, body = _call(method, path)
                refused = await _refused_for_role(env, who, method, concrete, body)
                if refused == _allowed(who, action):
                    mismatches.append((who, method, path, refused))
        assert mismatches == []


@pytest.mark.parametrize("who", list(WHO))
async def test_a_webhook_durable_needs_an_org_admin_on_http(tmp_path: Path, who: str) -> None:
    async with _env(tmp_path) as env:
        body = {"pattern": unique("hook."), "endpoint_url": "https://hooks.example.test/x"}
        refused = await _refused_for_role(env, who, "PUT", f"/v1/subscriptions/{unique('h')}", body)
        assert refused == (not _allowed(who, "durable.webhook"))
        assert refused == (who == "agent")


@pytest.mark.parametrize("who", list(WHO))
async def test_websocket_frames_with_each_role(tmp_path: Path, who: str) -> None:
    chat = {"join", "leave", "send", "typing"}
    assert set(WS_ACTIONS) == {"subscribe", "unsubscribe", "publish", "ack", "nack"} | chat
    async with _env(tmp_path) as env:
        headers = {"Authorization": f"Bearer {env.keys[who]}"}
        async with env.session.ws_connect(env.url + "/v1/ws", headers=headers) as ws:
            for op, frame in (
                ("subscribe", {"op": "subscribe", "pattern": unique("ws."), "ref": "s"}),
                ("publish", {"op": "publish", "subject": unique("ws."), "data": {}, "ref": "p"}),
            ):
                await ws.send_json(frame)
                answer = await ws.receive_json(timeout=10)
                assert (answer["op"] == "ok") == _allowed(who, WS_ACTIONS[op]), answer
            # Every role may take part in conversations: a chat frame for one that does
            # not exist gets past the roles table to the conversation's own answer.
            for op in sorted(chat):
                await ws.send_json({"op": op, "conversation": "c" + "0" * 20, "text": "x"})
                answer = await ws.receive_json(timeout=10)
                assert _allowed(who, WS_ACTIONS[op])
                assert answer["reason"] == "UNKNOWN_CONVERSATION", answer
