"""End to end: the listener limits in real processes. A broker with 256 open files whose
gateway is held at its cap by idle connections still answers gRPC; a standalone gateway
applies the ``http_*`` limits from its environment; at the cap, a caller that sends its request
at once reads the 503 (no reset), and a flood of them holds few descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker
from lockgate.clients import Client
from lockgate.gateways._linger import LINGER_SLOTS
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


_REQUEST = b"GET /v1/events?subject=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_REQUEST)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def _served(port: int) -> bool:
    """Whether a request is answered 200 (not yet when still refused: a 503, or a reset when
    the gateway had no lingering slot left to read the request before closing)."""
    try:
        return (await _get(port)).startswith(b"HTTP/1.1 200")
    except ConnectionResetError:
        return False


async def _refused(port: int) -> bool:
    """Whether a new connection is answered 503 at once, before it sends a request."""
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
            await eventually(lambda: _served(port), what="the gateway serves again")
        finally:
            await watch.stop()
            for _, w in conns:
                w.close()


@contextlib.asynccontextmanager
async def _standalone_gateway(broker: str, **env: str) -> AsyncIterator[tuple[int, int]]:
    """A ``lockgate gateway http`` process with ``env`` added; yields its pid and port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        "gateway",
        "http",
        "--broker",
        broker,
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, **env),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"ready" in line, line
        yield proc.pid, int(line.decode().rsplit(":", 1)[1])
    finally:
        proc.terminate()
        await proc.wait()


async def test_a_standalone_gateway_applies_the_limits_from_its_environment() -> None:
    async with (
        run_broker() as b,
        _standalone_gateway(
            b.target,
            LOCKGATE_HTTP_MAX_CONNECTIONS_PER_ADDRESS="2",
            LOCKGATE_HTTP_HEADER_TIMEOUT="2s",
        ) as (_, port),
    ):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        assert await _refused(port)
        # The idle ones are closed at the header timeout, then callers get in again.
        for reader, _ in held:
            assert await asyncio.wait_for(reader.read(), 10) == b""
        assert (await _get(port)).startswith(b"HTTP/1.1 200")


async def _request_at_once(port: int, keep: list[asyncio.StreamWriter] | None = None) -> bytes:
    """Connects and sends a whole request at once, without waiting for an answer; returns
    what the gateway answers (a reset raises ConnectionResetError). With ``keep``, the
    connection is not closed but added to it (a client that never closes its side)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_REQUEST)
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        if keep is None:
            writer.close()
        else:
            keep.append(writer)


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_at_the_cap_a_caller_that_sends_at_once_reads_the_503_and_a_flood_holds_few_fds() -> (
    None
):
    cap = 4
    async with (
        run_broker() as b,
        _standalone_gateway(
            b.target,
            LOCKGATE_HTTP_MAX_CONNECTIONS=str(cap),
            LOCKGATE_HTTP_MAX_CONNECTIONS_PER_ADDRESS="10000",
        ) as (pid, port),
    ):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(cap)]
        try:
            await eventually(lambda: _refused(port), what="the cap reached")
            before = _open_files(pid)
            # Its request arrives before the refusal: read and dropped, so no reset.
            for _ in range(20):
                head, _, body = (await _request_at_once(port)).partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 503"), head
                assert b"content-type: application/problem+json" in head.lower()
                problem = json.loads(body)
                assert problem["reason"] == "RESOURCE_EXHAUSTED"
                assert problem["metadata"]["setting"] == "http_max_connections"
            await eventually(lambda: _open_files(pid) <= before, what="lingering over")

            # A flood of clients that never close: each refused one lingers until its deadline,
            # but no more than LINGER_SLOTS at once. 16 connect at a time: a burst of hundreds
            # would also measure asyncio's accept batch (up to the listen backlog per loop turn,
            # held before any is answered), which is not the lingering's doing.
            baseline = _open_files(pid)
            peak = baseline
            flooding = True

            async def sample() -> None:
                nonlocal peak
                while flooding:
                    peak = max(peak, _open_files(pid))
                    await asyncio.sleep(0.005)

            kept: list[asyncio.StreamWriter] = []
            gate = asyncio.Semaphore(16)

            async def flood_one() -> bytes:
                async with gate:
                    return await _request_at_once(port, kept)

            sampler = asyncio.create_task(sample())
            try:
                answers = await asyncio.gather(
                    *(flood_one() for _ in range(300)), return_exceptions=True
                )
            finally:
                flooding = False
                await sampler
                for w in kept:
                    w.close()
            for a in answers:
                assert isinstance(a, ConnectionResetError) or (
                    isinstance(a, bytes) and a.startswith(b"HTTP/1.1 503")
                ), a
            assert peak <= baseline + LINGER_SLOTS + 16 + 16, (peak, baseline)
            assert sum(isinstance(a, bytes) for a in answers) >= LINGER_SLOTS
            await eventually(lambda: _open_files(pid) <= baseline, what="lingering over")
        finally:
            for _, w in held:
                w.close()
        await eventually(lambda: _served(port), what="the gateway serves again")
