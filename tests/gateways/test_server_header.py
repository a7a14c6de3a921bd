"""Every answer of our HTTP and WebSocket listeners says ``Server: lockgate``, never aiohttp's
and Python's versions: a handler's, a problem+json, a WebSocket upgrade, and aiohttp's own
400 for a request head it refuses before any of our code runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest_asyncio

from tests.gateways.gw_kit import Local, local_broker


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_broker(tmp_path) as local:
        yield local


def assert_ours(server: str | None) -> None:
    assert server == "lockgate", server


async def test_handlers_problems_and_upgrades_name_no_version(env: Local) -> None:
    async with env.session.get(f"{env.url}/v1/events?subject=a.b") as ok:
        assert ok.status == 200
        assert_ours(ok.headers.get("Server"))
    async with env.session.get(f"{env.url}/v1/events?subject=a..b") as bad:
        assert bad.status == 400 and bad.content_type == "application/problem+json"
        assert_ours(bad.headers.get("Server"))
    async with env.session.get(f"{env.url}/no/such/route") as missing:
        assert missing.status == 404
        assert_ours(missing.headers.get("Server"))
    async with env.session.ws_connect(f"{env.url}/v1/ws") as ws:
        assert_ours(ws._response.headers.get("Server"))


async def test_aiohttps_own_400_names_no_version(env: Local) -> None:
    parts = urlsplit(env.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await writer.drain()
        head = (await asyncio.wait_for(reader.read(65536), 10)).decode(errors="replace")
    finally:
        writer.close()
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400")), head
    assert "aiohttp" not in head.lower() and "python" not in head.lower(), head
    assert "\r\nServer: lockgate\r\n" in head, head
