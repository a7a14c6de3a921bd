"""The fault-injecting proxy stalls every live connection, whichever others came and went
before (a client that reconnected under load kept one connection unstalled: the proxy lost
track of its link, and test_publish_timeout_argument's publish got answered)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support import TcpProxy, eventually


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def _open(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = target.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_a_stall_reaches_a_connection_older_than_one_that_closed(echo: str) -> None:
    async with TcpProxy(echo) as proxy:
        old_r, old_w = await _open(proxy.target)
        old_w.write(b"ping")
        assert await asyncio.wait_for(old_r.readexactly(4), 5) == b"ping"
        gone_r, gone_w = await _open(proxy.target)
        gone_w.write(b"ping")
        assert await asyncio.wait_for(gone_r.readexactly(4), 5) == b"ping"
        gone_w.close()
        await eventually(lambda: len(proxy.links) == 1)  # the proxy saw it close

        proxy.stall()
        old_w.write(b"lost")
        await old_w.drain()
        # Read by the proxy and forgotten: never forwarded, so no echo can come back.
        await eventually(lambda: proxy.dropped == 4)
        old_w.close()
