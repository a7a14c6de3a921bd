"""The listener bounds (gateways/_guard.py) with real sockets: slow heads and bodies are cut
off, endless and huge requests are refused, and connections beyond the per-address and
total limits are answered 503 and closed while other callers still get in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.broker.config import ListenerLimits
from lockgate.broker.fdbudget import gateway_connection_cap
from lockgate.gateways._guard import ConnectionGuard
from tests.gateways.gw_kit import Local, event, local_broker
from tests.support.waiting import eventually

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **limits: object) -> AsyncIterator[Local]:
    async with local_broker(tmp_path, limits=ListenerLimits(**limits)) as env:  # type: ignore[arg-type]
        yield env


def _port(env: Local) -> int:
    return int(env.url.rsplit(":", 1)[1])


async def _connect(env: Local, source: str = "127.0.0.1") -> Conn:
    return await asyncio.open_connection("127.0.0.1", _port(env), local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``timeout``)."""
    out = b""
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                out += chunk
        except ConnectionResetError:  # closed with unread bytes of ours: a reset
            pass
    return out


def _problem(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.strip().startswith(b"{") else {}


async def _dribble(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Sends ``data`` a byte at a time (a slowloris); stops when the server closes."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def test_a_head_dribbled_a_byte_at_a_time_is_closed_within_the_header_timeout(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, header_timeout=0.5) as env:
        reader, writer = await _connect(env)
        head = b"GET /v1/events HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
        started = time.monotonic()
        sender = asyncio.create_task(_dribble(writer, head, 0.05))
        await _until_closed(reader, timeout=5)
        elapsed = time.monotonic() - started
        sender.cancel()
        writer.close()
        # Bytes kept arriving the whole time: they do not rearm the timeout.
        assert 0.4 < elapsed < 3, elapsed


async def test_an_idle_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    async with gateway(tmp_path, header_timeout=0.5) as env:
        reader, writer = await _connect(env)
        assert await _until_closed(reader, timeout=5) == b""
        writer.close()


async def test_a_body_dribbled_slowly_is_answered_408_and_closed(tmp_path: Path) -> None:
    async with gateway(tmp_path, body_timeout=0.5) as env:
        reader, writer = await _connect(env)
        writer.write(
            b"POST /v1/subjects/slow.x/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/cloudevents+json\r\nContent-Length: 1000\r\n\r\n"
        )
        started = time.monotonic()
        sender = asyncio.create_task(_dribble(writer, b" " * 1000, 0.05))
        raw = await _until_closed(reader, timeout=15)
        sender.cancel()
        writer.close()
        status, body = _problem(raw)
        assert status == 408, raw[:300]
        assert body["reason"] == "REQUEST_TIMEOUT"
        assert "http_body_timeout" in str(body["detail"])
        # The answer at the body timeout, the close after aiohttp's lingering read at most.
        assert time.monotonic() - started < 10


async def test_an_endless_chunked_body_is_refused_and_the_connection_closed(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as env:
        reader, writer = await _connect(env)
        writer.write(
            b"POST /v1/subjects/big.x/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/cloudevents-batch+json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"[" * 65536)

        async def endless() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(chunk)
                    await writer.drain()

        sender = asyncio.create_task(endless())
        started = time.monotonic()
        raw = await _until_closed(reader, timeout=20)
        sender.cancel()
        writer.close()
        # Closed after the refusal and aiohttp's lingering read (2 s) at most; the 413 itself
        # may be lost to the reset that closing on unread bytes sends.
        assert time.monotonic() - started < 15
        if raw:
            status, body = _problem(raw)
            assert status == 413 and body["reason"] == "BODY_TOO_LARGE", raw[:300]


@pytest.mark.parametrize(
    "head",
    [
        b"X-Big: " + b"a" * 100_000 + b"\r\n",  # one field over 8 KiB
        b"".join(b"X-H%d: v\r\n" % i for i in range(1000)),  # 1,000 fields
    ],
    ids=["huge-field", "many-fields"],
)
async def test_huge_heads_are_refused_and_closed(tmp_path: Path, head: bytes) -> None:
    async with gateway(tmp_path) as env:
        reader, writer = await _connect(env)
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            await writer.drain()
        raw = await _until_closed(reader, timeout=10)
        writer.close()
        # aiohttp's parser answers (plain text, before any handler) and closes.
        assert raw.split(b" ", 2)[1] in (b"400", b"431"), raw[:200]


async def test_a_flood_of_malformed_requests_logs_little_and_no_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(tmp_path) as env:
        for _ in range(30):
            reader, writer = await _connect(env)
            writer.write(b"GET /v1/events HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            assert (await _until_closed(reader, timeout=10)).split(b" ", 2)[1] == b"400"
            writer.close()
    # Not aiohttp's own logger (a traceback each); ours, at most one a second (the last
    # test's line may have used this second's).
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")]
    records = [r for r in caplog.records if r.name == "lockgate.gateways.protocol"]
    assert len(records) <= 5, [r.getMessage() for r in records]
    assert all(r.exc_info is None and r.levelname == "WARNING" for r in records)
    assert all("gateway.request.malformed" in r.getMessage() for r in records)


async def test_connections_beyond_the_per_address_limit_are_refused_others_get_in(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path, max_connections_per_address=3, header_timeout=60) as env:
        held = [await _connect(env) for _ in range(3)]
        reader, writer = await _connect(env)
        raw = await _until_closed(reader, timeout=5)
        writer.close()
        status, body = _problem(raw)
        assert status == 503, raw[:300]
        assert body["reason"] == "RESOURCE_EXHAUSTED"
        assert body["metadata"] == {  # type: ignore[comparison-overlap]
            "limit": "3",
            "setting": "http_max_connections_per_address",
            "retry_after": "1",
        }
        # Another address (127.0.0.2 is loopback too on Linux) still gets an answer.
        reader2, writer2 = await _connect(env, "127.0.0.2")
        writer2.write(b"GET /v1/events?subject=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await _until_closed(reader2, timeout=10)
        writer2.close()
        assert raw.startswith(b"HTTP/1.1 200"), raw[:300]
        # A held connection closing frees its place.
        held[0][1].close()

        async def admitted() -> bool:
            r, w = await _connect(env)
            w.write(b"GET /v1/events?subject=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await _until_closed(r, timeout=10)
            w.close()
            return answer.startswith(b"HTTP/1.1 200")

        await eventually(admitted, what="a place freed by a closed connection")
        for _, w in held[1:]:
            w.close()


async def test_connections_beyond_the_total_limit_are_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_connections=2, header_timeout=60) as env:
        held = [await _connect(env), await _connect(env, "127.0.0.2")]
        reader, writer = await _connect(env, "127.0.0.3")
        status, body = _problem(await _until_closed(reader, timeout=5))
        writer.close()
        assert status == 503
        assert body["metadata"]["setting"] == "http_max_connections"  # type: ignore[index]
        for _, w in held:
            w.close()


async def test_websocket_upgrades_without_frames_are_bounded(tmp_path: Path) -> None:
    """Upgrades count as connections (so the limits bound them), and a socket that never
    answers the heartbeat's ping is closed (gw_kit's WebSocket heartbeat is 1 s)."""
    async with gateway(tmp_path, max_connections_per_address=2, header_timeout=60) as env:
        upgrade = (
            b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        conns = [await _connect(env) for _ in range(2)]
        for reader, writer in conns:
            writer.write(upgrade)
            line = await asyncio.wait_for(reader.readline(), 10)
            assert line.startswith(b"HTTP/1.1 101"), line
        reader, writer = await _connect(env)
        status, _ = _problem(await _until_closed(reader, timeout=5))
        writer.close()
        assert status == 503
        # Silent sockets (no pong, no frame) are closed by the heartbeat.
        for reader, writer in conns:
            await _until_closed(reader, timeout=10)
            writer.close()


async def test_a_client_that_never_reads_its_answer_is_cut_off(tmp_path: Path) -> None:
    """Slow read: an answer larger than the socket buffers to a client that reads nothing
    holds its handler on the write (the header timeout does not run then); without progress
    for http_send_timeout the connection is aborted."""
    async with gateway(tmp_path, send_timeout=1.0, header_timeout=60) as env:
        subject = "fat.x"
        for n in range(10):  # 1,000 events of 8 KB: an 8 MB page, more than the buffers hold
            events = [event(n * 100 + i, data='"' + "z" * 8000 + '"') for i in range(100)]
            await env.api.publish(None, subject, events)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", _port(env)))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            f"GET /v1/events?subject={subject}&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await eventually(lambda: env.guard.stalled == 1, timeout=20, what="a stalled read cut")
        got = len(await _until_closed(reader, timeout=10))
        writer.close()
        assert got < 8_000_000, got
        # A reading client gets the whole page through the same gateway.
        async with env.session.get(f"{env.url}/v1/events?subject={subject}&limit=1000") as r:
            assert len((await r.json())["events"]) == 1000


def test_the_cap_is_a_share_of_the_open_file_limit() -> None:
    assert gateway_connection_cap(0, 1024) == 512
    assert gateway_connection_cap(0, 20) == 16
    assert gateway_connection_cap(100, 1024) == 100
    assert ConnectionGuard(ListenerLimits(), soft_limit=256).max_connections == 128
