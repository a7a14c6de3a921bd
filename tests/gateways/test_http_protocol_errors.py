"""Requests that aiohttp refuses before any route or middleware runs (a header over its
8,190-byte limit, a malformed header line) are answered with problem+json too, with aiohttp's
status, and the connection closes; on a TLS listener as on a plain one."""

from __future__ import annotations

import asyncio
import json
import ssl as _ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest_asyncio
from aiohttp import web

from lockgate.broker.tls import ServerTLS
from lockgate.gateways._site import start_site
from tests.gateways.gw_kit import Local, local_broker
from tests.support.certs import CertAuthority


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Local]:
    async with local_broker(tmp_path) as local:
        yield local


async def exchange(
    env: Local | str, request: bytes, ssl: object = None
) -> tuple[str, dict[str, object]]:
    """Sends raw bytes; returns the answer's head and its JSON body, read to the close."""
    parts = urlsplit(env if isinstance(env, str) else env.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=ssl)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.decode(errors="replace").partition("\r\n\r\n")
    return head, json.loads(body)  # read to EOF: the gateway closed the connection


async def test_a_9_kb_header_is_refused_with_problem_json(env: Local) -> None:
    big = "x" * 9 * 1024
    head, body = await exchange(
        env, f"GET /v1/events HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode()
    )
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400")), head
    assert "\r\nContent-Type: application/problem+json" in head, head
    assert body["status"] == 400 and body["reason"] == "INVALID_ARGUMENT", body
    assert "8190" in str(body["detail"]) and "8,190 bytes" in str(body["hint"]), body
    # The server is fine afterwards.
    async with env.session.get(f"{env.url}/v1/events?subject=a.b") as ok:
        assert ok.status == 200


async def test_a_malformed_header_line_is_refused_with_problem_json(env: Local) -> None:
    head, body = await exchange(env, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400")), head
    assert "\r\nContent-Type: application/problem+json" in head, head
    assert "\r\nServer: lockgate\r\n" in head + "\r\n", head
    assert body["reason"] == "INVALID_ARGUMENT" and str(body["detail"]).startswith(
        "the request head is malformed"
    ), body


async def test_a_tls_listener_answers_the_same(tmp_path: Path) -> None:
    ca = CertAuthority.create()
    files = ca.issue(dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "server")
    tls = ServerTLS.from_settings(cert=str(files.cert), key=str(files.key))
    assert tls is not None
    runner, port = await start_site(web.Application(), "127.0.0.1:0", tls=tls)
    try:
        context = _ssl.create_default_context(cadata=ca.pem.decode())
        big = "x" * 9 * 1024
        head, body = await exchange(
            f"https://127.0.0.1:{port}",
            f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode(),
            ssl=context,
        )
    finally:
        await runner.cleanup()
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400")), head
    assert "\r\nContent-Type: application/problem+json" in head, head
    assert body["reason"] == "INVALID_ARGUMENT" and "8190" in str(body["detail"]), body
