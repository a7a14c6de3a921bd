"""End to end: the listener limits in real processes. A broker with 256 open files whose
gateway is held at its cap by idle connections still answers gRPC; a standalone gateway
applies the ``http_*`` limits from its environment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker
from lockgate.clients import Client
from tests.support import eventually

pytestmark = pytest.mark.e2e

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Watch:
    """Reads every connection until the server closes it; counts the 503 refusals."""

    def __init__(self, conns: list[Conn]) -> None:
        self.refused = 0
        self.closed = 0
        self.tasks = [asyncio.create_task(self._read(r)) for r, _ in conns]

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            data = await reader.read()
            self.refused += data.startswith(b"HTTP/1.1 503")
        self.closed += 1

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/events?subject=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def _refused(port: int) -> bool:
    """Whether a new connection is answered 503 (at once, before it sends a request: sending
    one could race the close into a reset that loses the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 503")
    finally:
        writer.close()


async def test_with_the_gateway_at_its_connection_cap_grpc_still_answers(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "lockgate.toml"
    cfg.write_text(
        'http_header_timeout = "5m"\nhttp_max_connections_per_address = 10000\n'
        f'[gateways.http]\nlisten = "127.0.0.1:{port}"\n'
    )
    # 256 open files: the gateways' share (http_max_connections = 0) is 128.
    async with run_broker(extra_args=["--config", str(cfg)], open_files=256) as b:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(300)]
        watch = Watch(conns)
        try:
            await eventually(lambda: watch.refused >= 300 - 128, what="refusals past the cap")
            assert watch.closed == watch.refused == 300 - 128  # the 128 admitted stay open
            # gRPC answers: a publish and a read of it.
            async with Client(b.target) as c:
                event_id = await asyncio.wait_for(c.publish("cap.x", {"n": 1}), 10)
                stored = await asyncio.wait_for(c.get_event(event_id), 10)
                assert stored.id == event_id
            # A new HTTP caller is told why, and gets in once the idle ones are gone.
            assert await _refused(port)
            for _, w in conns:
                w.close()

            async def served() -> bool:
                try:
                    return (await _get(port)).startswith(b"HTTP/1.1 200")
                except ConnectionResetError:
                    # Still refused (the closes not yet seen by the gateway), and its request
                    # unread when the gateway closed: the kernel answers that with a reset.
                    return False

            await eventually(served, what="the gateway serves again")
        finally:
            await watch.stop()
            for _, w in conns:
                w.close()


async def test_a_standalone_gateway_applies_the_limits_from_its_environment() -> None:
    async with run_broker() as b:
        env = dict(
            os.environ,
            LOCKGATE_HTTP_MAX_CONNECTIONS_PER_ADDRESS="2",
            LOCKGATE_HTTP_HEADER_TIMEOUT="2s",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lockgate.broker.cli",
            "gateway",
            "http",
            "--broker",
            b.target,
            "--listen",
            "127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert b"ready" in line, line
            port = int(line.decode().rsplit(":", 1)[1])
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            assert await _refused(port)
            # The idle ones are closed at the header timeout, then callers get in again.
            for reader, _ in held:
                assert await asyncio.wait_for(reader.read(), 10) == b""
            assert (await _get(port)).startswith(b"HTTP/1.1 200")
        finally:
            proc.terminate()
            await proc.wait()
