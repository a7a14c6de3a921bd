"""Does a grpcio setting lower grpc.aio's per-message cost here? An echo on one bidi stream.

    .venv/bin/python bench/grpc_options.py [--reps 3] [--rate 2000] [--duration 3] [CONFIG ...]

Each configuration starts a grpc.aio echo server (one ``stream_stream`` method, raw bytes) and a
client in separate processes; the client writes one small message at ``rate`` per second on
one stream (the send time in it) and times each echo. Configurations alternate, ``reps`` times
each, so they see the same machine. Printed per configuration: round-trip p50/p99 (us) and the
CPU each process spent per round trip (us; one message in and one out on each side), median
(min-max) over the reps. CPU per round trip is the figure a loaded machine moves least.

What is compared (``CONFIGS``): uvloop (the broker's and the benches' loop) against asyncio's
own; reading the stream with ``read()`` against ``async for``; the channel and server options
``grpc.optimization_target=latency``, ``grpc.http2.write_buffer_size=0``,
``grpc.http2.bdp_probe=0`` and ``grpc.experimental.tcp_min_read_chunk_size``; and the
environment's ``GRPC_POLL_STRATEGY=poll`` (epoll1 is grpcio's default on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "asyncio-loop": {"loop": "asyncio"},
    "read()": {"mode": "read"},
    "optimization_target=latency": {"options": "grpc.optimization_target=latency"},
    "write_buffer_size=0": {"options": "grpc.http2.write_buffer_size=0"},
    "bdp_probe=0": {"options": "grpc.http2.bdp_probe=0"},
    "tcp_min_read_chunk_size=256": {"options": "grpc.experimental.tcp_min_read_chunk_size=256"},
    "GRPC_POLL_STRATEGY=poll": {"env": {"GRPC_POLL_STRATEGY": "poll"}},
}


def _options(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for kv in filter(None, text.split(",")):
        key, value = kv.split("=", 1)
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


def _identity(b: bytes) -> bytes:
    return b


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _serve(port: int, options: str, mode: str) -> None:
    async def echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for raw in requests:
            yield raw

    async def echo_read(requests: AsyncIterator[bytes], context: Any) -> None:
        while (raw := await context.read()) is not grpc.aio.EOF:
            await context.write(raw)

    server = grpc.aio.server(options=_options(options))
    handler = grpc.stream_stream_rpc_method_handler(echo_read if mode == "read" else echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    cpu0 = _cpu()
    # The client is done once a line comes: this process's CPU since it was ready.
    await asyncio.to_thread(sys.stdin.readline)
    print(json.dumps({"cpu": _cpu() - cpu0}), flush=True)


async def _client(port: int, options: str, mode: str, rate: float, duration: float) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", _options(options))
    await channel.channel_ready()
    call = channel.stream_stream("/bench.Echo/Echo", _identity, _identity)()
    rtts: list[int] = []

    async def read() -> None:
        if mode == "read":
            while (raw := await call.read()) is not grpc.aio.EOF:
                rtts.append(time.monotonic_ns() - int(raw))
        else:
            async for raw in call:
                rtts.append(time.monotonic_ns() - int(raw))

    reader = asyncio.create_task(read())
    for _ in range(200):  # warm-up, not counted
        await call.write(str(time.monotonic_ns()).encode())
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    rtts.clear()
    cpu0, t0, n = _cpu(), time.monotonic(), 0
    while (now := time.monotonic()) - t0 < duration:
        due = t0 + n / rate
        if now < due:
            await asyncio.sleep(due - now)
        await call.write(str(time.monotonic_ns()).encode())
        n += 1
    await asyncio.sleep(0.2)
    cpu = _cpu() - cpu0
    await call.done_writing()
    reader.cancel()
    rtts.sort()
    print(json.dumps({"n": n, "rtts": len(rtts), "p50": rtts[len(rtts) // 2] / 1e3,
                      "p99": rtts[int(len(rtts) * 0.99)] / 1e3, "cpu": cpu}))  # fmt: skip


def _run(coro: Any, loop: str) -> None:
    if loop == "asyncio":
        asyncio.run(coro)
    else:
        import uvloop

        uvloop.run(coro)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(config: dict[str, Any], rate: float, duration: float) -> dict[str, float]:
    """One run of ``config``: p50, p99 (us), client and server CPU per round trip (us)."""
    env = {**os.environ, **config.get("env", {})}
    common = [config.get("options", ""), config.get("mode", "for"), config.get("loop", "uvloop")]
    port = str(_free_port())
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        [*me, "--role", "server", port, *common], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        server.stdout.readline()
        run = [*me, "--role", "client", port, *common, str(rate), str(duration)]
        client = json.loads(subprocess.run(run, env=env, capture_output=True, text=True,
                                           check=True).stdout)  # fmt: skip
        server.stdin.write("done\n")
        server.stdin.flush()
        served = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    n = client["n"]
    return {
        "p50": client["p50"],
        "p99": client["p99"],
        "client": client["cpu"] / n * 1e6,
        # The server's CPU includes the warm-up's 200 round trips.
        "server": served["cpu"] / (n + 200) * 1e6,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--role":
        role, port, options, mode, loop, *rest = sys.argv[2:]
        if role == "server":
            _run(_serve(int(port), options, mode), loop)
        else:
            _run(_client(int(port), options, mode, float(rest[0]), float(rest[1])), loop)
        return
    p = argparse.ArgumentParser(prog="bench/grpc_options.py", description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="*", help=f"any of {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rate", type=float, default=2000.0, help="round trips per second")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    args = p.parse_args()
    names = args.configs or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}")
    print(f"load average before: {os.getloadavg()}")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(args.reps):
        for name in names:
            runs[name].append(measure(CONFIGS[name], args.rate, args.duration))
    print(f"load average after: {os.getloadavg()}")
    print("config | p50 us | p99 us | client CPU us/round trip | server CPU us/round trip")

    def cell(rs: list[dict[str, float]], key: str) -> str:
        values = [r[key] for r in rs]
        return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

    for name, rs in runs.items():
        print(" | ".join([name, *(cell(rs, k) for k in ("p50", "p99", "client", "server"))]))


if __name__ == "__main__":
    main()
