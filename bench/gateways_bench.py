"""Benchmark the gateways: batched HTTP ingest, Redis stream ingest vs redis-py's own
XREADGROUP rate, and WebSocket fan-out to 100 connections.

    .venv/bin/python bench/gateways_bench.py [--runs 3] [--events 20000] [--conns 100]

The broker and its HTTP/WebSocket gateway run in a child process (in-process gateways, as
``lockgate serve`` will run them, SQLite with fsync=os); clients run in this process.
Redis ingest runs the broker in this process (``LocalAPI``) against the local Redis; its
baseline is redis-py reading and XACKing the same stream with XREADGROUP, no broker.
Each figure is the median of ``--runs`` runs with the min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import redis.asyncio as aioredis

from lockgate.broker.auth import Authenticator
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore

REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _broker(data_dir: str) -> tuple[Broker, Authenticator]:
    store = SqliteStore(data_dir, fsync="os")
    broker = Broker(Config(data_dir=data_dir, fsync="os"), store)
    await broker.start()
    return broker, Authenticator(store, dev_mode=True)


async def serve(port: int) -> None:
    """The child: a broker with the HTTP and WebSocket gateways on ``port``."""
    from lockgate.broker.api import LocalAPI
    from lockgate.gateways.embedded import start_gateways

    with tempfile.TemporaryDirectory() as d:
        broker, auth = await _broker(d)
        stop = await start_gateways(
            LocalAPI(broker, auth),
            {
                "http": {"listen": f"127.0.0.1:{port}", "max_body_bytes": 8 << 20},
                "ws": {"max_send_buffer": 64 << 20},
            },
        )
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await stop()
        await broker.stop()


def _ce(i: int, extra: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "/bench",
        "type": "b",
        "datacontenttype": "application/json",
        "data": {"i": i, **(extra or {})},
    }


async def http_ingest(url: str, events: int, batch: int = 200, clients: int = 4) -> float:
    body_per = [json.dumps([_ce(i) for i in range(batch)]).encode() for _ in range(4)]
    per_client = events // clients // batch
    async with aiohttp.ClientSession() as http:

        async def client(c: int) -> None:
            for k in range(per_client):
                r = await http.post(
                    f"{url}/v1/subjects/bench.http{c}/events",
                    data=body_per[k % 4],
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
                assert r.status == 200, await r.text()
                await r.read()
                # fresh ids so the dedup window does not turn them into duplicates
                body_per[k % 4] = json.dumps([_ce(i) for i in range(batch)]).encode()

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return per_client * clients * batch / (time.perf_counter() - t0)


async def ws_fanout(url: str, conns: int, events: int, pace: float = 0.0) -> tuple[float, float]:
    """Frames/s delivered in all and p99 latency (ms) publish -> receipt. Batches of 10
    events are published as fast as possible (throughput) or every ``pace`` seconds
    (latency at a rate the sockets keep up with)."""
    subject = f"bench.ws.{uuid.uuid4().hex[:6]}"
    lat: list[float] = []
    done = asyncio.Event()
    received = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = [await http.ws_connect(f"{url}/v1/ws", max_msg_size=0) for _ in range(conns)]
        for ws in sockets:
            await ws.send_json({"op": "subscribe", "pattern": subject})
            assert (await ws.receive_json())["op"] == "ok"

        async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received
            n = 0
            while n < events:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"socket closed: {msg.type} {msg.data} {msg.extra}")
                frame = json.loads(msg.data)
                if frame["op"] != "event":
                    continue
                lat.append(time.time() - frame["event"]["data"]["t"])
                n += 1
                received += 1
            if received >= conns * events:
                done.set()

        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        t0 = time.perf_counter()
        batch = 10 if not pace else 1
        for k in range(events // batch):
            body = json.dumps([_ce(k * batch + i, {"t": time.time()}) for i in range(batch)])
            r = await http.post(
                f"{url}/v1/subjects/{subject}/events",
                data=body,
                headers={"Content-Type": "application/cloudevents-batch+json"},
            )
            await r.read()
            await asyncio.sleep(pace or 0.002)
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*readers)
        for ws in sockets:
            await ws.close()
    lat.sort()
    return conns * events / elapsed, lat[int(len(lat) * 0.99) - 1] * 1000


async def redis_rates(events: int) -> tuple[float, float]:
    """(redis-py XREADGROUP+XACK entries/s, RedisIngest entries/s) on the same stream."""
    from lockgate.broker.api import LocalAPI
    from lockgate.gateways.redis import RedisIngest, RedisSettings

    r = aioredis.from_url(REDIS_URL)
    stream = f"lg:bench:{uuid.uuid4().hex[:8]}"
    pipe = r.pipeline(transaction=False)
    for i in range(events):
        pipe.xadd(stream, {"event": json.dumps(_ce(i))})
    await pipe.execute()
    # Baseline: redis-py alone, the same reads and acks the gateway does.
    await r.xgroup_create(stream, "raw", id="0")
    t0 = time.perf_counter()
    n = 0
    while n < events:
        resp = await r.xreadgroup("raw", "c", {stream: ">"}, count=500)
        ids = [eid for _, entries in resp for eid, _ in entries]
        for _, entries in resp:
            for _, fields in entries:
                json.loads(fields[b"event"])  # the parse any consumer does
        await r.xack(stream, "raw", *ids)
        n += len(ids)
    raw = events / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        broker, auth = await _broker(d)
        ingest = RedisIngest(
            LocalAPI(broker, auth),
            RedisSettings(
                url=REDIS_URL,
                streams={stream: "bench.redis"},
                batch=500,
                dead_letter=stream + ":dlq",
            ),
        )
        t0 = time.perf_counter()
        await ingest.start()
        while ingest.metrics["xacked"] < events:
            await asyncio.sleep(0.005)
        ours = events / (time.perf_counter() - t0)
        await ingest.stop()
        await broker.stop()
    await r.delete(stream)
    await r.aclose()
    return raw, ours


def _fmt(values: list[float], unit: str) -> str:
    return (
        f"{statistics.median(values):,.0f} {unit} (min {min(values):,.0f}, max {max(values):,.0f})"
    )


async def main(args: argparse.Namespace) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        str(port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    assert b"ready" in await child.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    http, fan, p99, raw, ours, ratio = [], [], [], [], [], []
    try:
        for _ in range(args.runs):
            http.append(await http_ingest(url, args.events))
            f, _ = await ws_fanout(url, args.conns, args.fanout_events)
            fan.append(f)
            _, p = await ws_fanout(url, args.conns, 100, pace=0.02)
            p99.append(p)
            a, b = await redis_rates(args.events)
            raw.append(a)
            ours.append(b)
            ratio.append(b / a)
    finally:
        child.stdin.close()
        await child.wait()
    print(
        f"runs={args.runs} events={args.events} conns={args.conns} "
        f"fanout_events={args.fanout_events} cpus={os.cpu_count()}"
    )
    print("HTTP batched ingest (batches of 200, 4 clients):", _fmt(http, "events/s"))
    print(f"WebSocket fan-out to {args.conns} sockets:", _fmt(fan, "frames/s"))
    print(
        f"  p99 latency publish->receipt, paced at <=50 events/s (<={50 * args.conns} frames/s):",
        f"{statistics.median(p99):.1f} ms (min {min(p99):.1f}, max {max(p99):.1f})",
    )
    print("Redis stream, redis-py XREADGROUP+XACK alone:", _fmt(raw, "entries/s"))
    print("Redis stream ingest into the broker:", _fmt(ours, "entries/s"))
    print(
        f"  ratio ingest / redis-py: {statistics.median(ratio):.2f} "
        f"(min {min(ratio):.2f}, max {max(ratio):.2f})"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--fanout-events", dest="fanout_events", type=int, default=500)
    ap.add_argument("--serve", type=int, default=0)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(a.serve) if a.serve else main(a))
