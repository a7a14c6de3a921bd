"""A TLS listener counts a connection from its TCP accept and bounds its handshake
(gateways/_guard.py, ``http_tls_handshake_timeout``): a client that connects and never sends
a ClientHello holds a place of its address's limit only for the handshake timeout."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from lockgate.broker.config import ListenerLimits
from lockgate.broker.tls import ServerTLS
from lockgate.gateways._guard import ConnectionGuard
from lockgate.gateways._site import start_site
from tests.support.certs import CertAuthority
from tests.support.waiting import eventually


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _closed_within(reader: asyncio.StreamReader, timeout: float) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def test_a_stalled_handshake_counts_against_the_address_limit_and_is_closed(
    tmp_path: Path,
) -> None:
    await _stalled_handshakes(tmp_path)


def test_the_same_under_uvloop(tmp_path: Path) -> None:
    # lockgate serve runs on uvloop, whose transports differ (it reads before a protocol
    # could pause): the accept loop must hold there too.
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(_stalled_handshakes(tmp_path))


async def _stalled_handshakes(tmp_path: Path) -> None:
    ca = CertAuthority.create()
    files = ca.issue(dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "server")
    tls = ServerTLS.from_settings(cert=str(files.cert), key=str(files.key))
    assert tls is not None
    # The stalled two must still hold their places while a third connection and a TLS client
    # are refused: with 0.5 s they could time out first on a loaded machine.
    guard = ConnectionGuard(
        ListenerLimits(max_connections_per_address=2, tls_handshake_timeout=2.0)
    )
    app = web.Application()
    app.router.add_get("/", _hello)
    runner, port = await start_site(app, "127.0.0.1:0", guard, tls=tls)
    client_ctx = ssl.create_default_context(cadata=ca.pem.decode())
    try:
        # Two TCP connections that never send a ClientHello take the address's two places.
        stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await eventually(lambda: guard.open == 2, timeout=5)
        # A third from that address is closed at once; a real TLS client too meanwhile.
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_within(reader3, timeout=2) < 2
        writer3.close()
        assert guard.refused >= 1
        async with aiohttp.ClientSession() as session:
            try:
                async with session.get(f"https://127.0.0.1:{port}/", ssl=client_ctx) as r:
                    refused_client = r.status
            except aiohttp.ClientError:
                refused_client = 0
        assert refused_client == 0
        # The stalled ones are closed within the handshake timeout, and their places freed.
        for reader, _writer in stalled:
            assert await _closed_within(reader, timeout=5) < 5
        await eventually(lambda: guard.open == 0, timeout=5)
        # Now a real client gets through.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/", ssl=client_ctx) as r,
        ):
            assert r.status == 200
            assert await r.text() == "hello"
        await eventually(lambda: guard.open == 0, timeout=5)
        for _reader, writer in stalled:
            writer.close()
    finally:
        await runner.cleanup()


async def test_a_stalled_handshake_ends_after_the_timeout_not_before(tmp_path: Path) -> None:
    ca = CertAuthority.create()
    files = ca.issue(dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "server")
    tls = ServerTLS.from_settings(cert=str(files.cert), key=str(files.key))
    assert tls is not None
    guard = ConnectionGuard(ListenerLimits(tls_handshake_timeout=1.0))
    runner, port = await start_site(web.Application(), "127.0.0.1:0", guard, tls=tls)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        elapsed = await _closed_within(reader, timeout=10)
        writer.close()
        assert 0.8 < elapsed < 5, elapsed
        await eventually(lambda: guard.open == 0, timeout=5)
    finally:
        await runner.cleanup()
