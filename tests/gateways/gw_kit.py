"""Helpers for the gateway tests (imported by conftest and the test modules)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lockgate.broker.api import LocalAPI
from lockgate.broker.auth import Authenticator
from lockgate.broker.config import Config, ListenerLimits
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.gateways._guard import ConnectionGuard
from lockgate.gateways._site import start_site
from lockgate.gateways.http import HttpSettings, build_app

__all__ = [
    "Local",
    "accept_malformed",
    "count_events",
    "event",
    "local_broker",
    "malformed_event",
    "unique",
]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def event(i: int = 0, data: str = '{"n": 0}', source: str = "test") -> cloudevent_pb2.CloudEvent:
    ev = cloudevent_pb2.CloudEvent(
        id=f"e{i}-{uuid.uuid4().hex[:8]}", source=source, spec_version="1.0", type="t"
    )
    ev.attributes["datacontenttype"].ce_string = "application/json"
    ev.text_data = data
    return ev


def malformed_event(i: int = 0) -> cloudevent_pb2.CloudEvent:
    """An event whose ``time`` has no RFC 3339 form (nanoseconds over 10^9): what the broker
    accepted before ingress validated attribute values, and what no egress can encode."""
    ev = event(i)
    ev.attributes["time"].ce_timestamp.nanos = 2_000_000_000
    return ev


def accept_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets the in-process broker store malformed events, as brokers before the attribute
    rules did, so that tests can get one into the log and watch the egress skip it."""
    import lockgate.broker.cloudevents

    monkeypatch.setattr(lockgate.broker.cloudevents, "check_attributes", lambda attributes: None)


@dataclass
class Local:
    broker: Broker
    auth: Authenticator
    api: LocalAPI
    url: str
    session: aiohttp.ClientSession
    app: web.Application
    guard: ConnectionGuard


async def count_events(api: LocalAPI, pattern: str = ">") -> int:
    events, _ = await api.query(None, pattern, limit=1000)
    return len(events)


@contextlib.asynccontextmanager
async def local_broker(
    tmp: Path,
    *,
    settings: HttpSettings | None = None,
    ws: object = True,
    limits: ListenerLimits | None = None,
    **config: object,
) -> AsyncIterator[Local]:
    cfg = Config(
        data_dir=str(tmp),
        fsync="never",
        webhook_allow_private=True,
        **config,  # type: ignore[arg-type]
    )
    store = SqliteStore(str(tmp), fsync="never")
    broker = Broker(cfg, store)
    await broker.start()
    auth = Authenticator(store, dev_mode=True)
    api = LocalAPI(broker, auth)
    app = build_app(api, settings)
    if ws:
        from lockgate.gateways.websocket import WsSettings, add_ws_route

        add_ws_route(app, api, ws if isinstance(ws, WsSettings) else WsSettings(heartbeat=1.0))
    guard = ConnectionGuard(limits)
    runner, port = await start_site(app, "127.0.0.1:0", guard)
    session = aiohttp.ClientSession()
    try:
        yield Local(broker, auth, api, f"http://127.0.0.1:{port}", session, app, guard)
    finally:
        await session.close()
        await runner.cleanup()
        await broker.stop()
