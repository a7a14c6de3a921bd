"""Benchmark the gateways: batched HTTP ingest, WebSocket fan-out to 100 connections, and
Redis stream ingest against redis-py+hiredis reading the same stream alone.

    .venv/bin/python bench/gateways_bench.py [--runs 3] [--events 20000] [--conns 100]
        [--parts http ws redis]

HTTP and WebSocket: the broker and its HTTP/WebSocket gateway run in a child process
(in-process gateways, as ``lockgate serve`` runs them, SQLite with fsync=os); clients run in
this process; the child's CPU per HTTP event is reported. Redis: one stream, filled once per
run, read by three consumer groups in turn: redis-py alone (XREADGROUP COUNT 500, json.loads
of each entry, XACK pipelined with the next read: the baseline), the standalone gateway
(``lockgate gateway redis``: RedisIngest over RemoteAPI in this process, into a ``lockgate
serve`` child), and the gateway embedded in a broker in this process (``LocalAPI``). The
order of the first two alternates between runs. Each figure is the median of ``--runs``
runs with the min-max; the load average before and after is printed.
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

from bench.procs import cpu_of
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
            # every bench socket comes from 127.0.0.1: above the per-address cap of 64
            limits=Config(http_max_connections_per_address=1024).listener_limits(),
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


async def ws_publish(url: str, events: int, conns: int = 4, window: int = 100) -> float:
    """Events/s published with ``{"op": "publish", "event": ...}`` frames (one event each),
    ``conns`` sockets each keeping ``window`` frames unanswered."""
    subject = f"bench.wspub.{uuid.uuid4().hex[:6]}"
    per = events // conns
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(f"{url}/v1/ws", max_msg_size=0) for _ in range(conns)]

        async def one(ws: aiohttp.ClientWebSocketResponse) -> None:
            sent = answered = 0
            while answered < per:
                while sent < per and sent - answered < window:
                    frame = {"op": "publish", "subject": subject, "event": _ce(sent)}
                    await ws.send_str(json.dumps(frame))
                    sent += 1
                answer = json.loads((await ws.receive()).data)
                assert answer["op"] == "ok", answer
                answered += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(ws) for ws in sockets))
        elapsed = time.perf_counter() - t0
        for ws in sockets:
            await ws.close()
    return per * conns / elapsed


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


async def _fill_stream(r: aioredis.Redis, stream: str, events: int, groups: list[str]) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(events):
        pipe.xadd(stream, {"event": json.dumps(_ce(i))})
    await pipe.execute()
    for group in groups:
        await r.xgroup_create(stream, group, id="0")


async def redis_py_alone(r: aioredis.Redis, stream: str, events: int) -> float:
    """The baseline: redis-py (with hiredis) reading ``stream`` in its own group, as a
    consumer that wants throughput does: XREADGROUP COUNT 500, ``json.loads`` of each entry
    (the parse any consumer does), and each batch's XACK pipelined with the next read (one
    round trip per batch). Entries/s."""
    t0 = time.perf_counter()
    n = 0
    ids: list[bytes] = []
    while n < events:
        pipe = r.pipeline(transaction=False)
        if ids:
            pipe.xack(stream, "raw", *ids)
        pipe.xreadgroup("raw", "c", {stream: ">"}, count=500)
        resp = (await pipe.execute())[-1]
        ids = [eid for _, entries in resp for eid, _ in entries]
        for _, entries in resp:
            for _, fields in entries:
                json.loads(fields[b"event"])
        n += len(ids)
    await r.xack(stream, "raw", *ids)
    return events / (time.perf_counter() - t0)


async def _ingest(api: object, stream: str, group: str, events: int) -> float:
    """Entries/s of a RedisIngest through ``api`` on ``stream`` in its own group, from its
    start until every entry is XACKed (so after the broker stored it)."""
    from lockgate.gateways.redis import RedisIngest, RedisSettings

    ingest = RedisIngest(
        api,  # type: ignore[arg-type]
        RedisSettings(
            url=REDIS_URL,
            streams={stream: "bench.redis"},
            group=group,
            consumer="bench",
            batch=500,
            dead_letter=stream + ":dlq",
        ),
    )
    t0 = time.perf_counter()
    await ingest.start()
    while ingest.metrics["xacked"] < events:
        await asyncio.sleep(0.002)
    rate = events / (time.perf_counter() - t0)
    await ingest.stop()
    assert ingest.metrics["dead_lettered"] == 0, ingest.metrics
    return rate


async def redis_rates(events: int, target: str, broker_pid: int, run: int) -> dict[str, float]:
    """One run of the three readers of one stream, each in its own consumer group: redis-py
    alone, the standalone gateway (``lockgate gateway redis``: RemoteAPI, this process) into
    the broker process at ``target``, and the gateway embedded in a broker in this process
    (``LocalAPI``). Odd runs start with the gateway, even ones with redis-py."""
    from lockgate.broker.api import LocalAPI
    from lockgate.gateways._remote import RemoteAPI

    r = aioredis.from_url(REDIS_URL)
    stream = f"lg:bench:{uuid.uuid4().hex[:8]}"
    await _fill_stream(r, stream, events, ["raw", "remote", "embedded"])
    out: dict[str, float] = {}

    async def standalone() -> None:
        api = RemoteAPI(target)
        cpu0, broker0 = time.process_time(), cpu_of(broker_pid)
        out["standalone"] = await _ingest(api, stream, "remote", events)
        out["gw_cpu_us"] = (time.process_time() - cpu0) / events * 1e6
        out["broker_cpu_us"] = (cpu_of(broker_pid) - broker0) / events * 1e6
        await api.close()

    async def alone() -> None:
        cpu0 = time.process_time()
        out["redis_py"] = await redis_py_alone(r, stream, events)
        out["redis_py_cpu_us"] = (time.process_time() - cpu0) / events * 1e6

    for part in (standalone, alone) if run % 2 else (alone, standalone):
        await part()
    with tempfile.TemporaryDirectory() as d:
        broker, auth = await _broker(d)
        out["embedded"] = await _ingest(LocalAPI(broker, auth), stream, "embedded", events)
        await broker.stop()
    await r.delete(stream)
    await r.aclose()
    return out


def _fmt(values: list[float], unit: str, spec: str = ",.0f") -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:{spec}} {unit} (min {lo:{spec}}, max {hi:{spec}})"


async def web_parts(args: argparse.Namespace) -> dict[str, list[float]]:
    """HTTP ingest and WebSocket fan-out against a child process (broker + gateways)."""
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
    got: dict[str, list[float]] = {
        "http": [],
        "fan": [],
        "p99": [],
        "http_cpu": [],
        "wspub": [],
        "wspub_cpu": [],
    }
    try:
        for _ in range(args.runs):
            if "http" in args.parts:
                cpu0 = cpu_of(child.pid)
                got["http"].append(await http_ingest(url, args.events))
                got["http_cpu"].append((cpu_of(child.pid) - cpu0) / args.events * 1e6)
            if "ws" in args.parts:
                cpu0 = cpu_of(child.pid)
                got["wspub"].append(await ws_publish(url, args.events // 2))
                got["wspub_cpu"].append((cpu_of(child.pid) - cpu0) / (args.events // 2) * 1e6)
                f, _ = await ws_fanout(url, args.conns, args.fanout_events)
                got["fan"].append(f)
                _, p = await ws_fanout(url, args.conns, 100, pace=0.02)
                got["p99"].append(p)
    finally:
        child.stdin.close()
        await child.wait()
    return got


async def main(args: argparse.Namespace) -> None:
    load = os.getloadavg()
    web: dict[str, list[float]] = {}
    if {"http", "ws"} & set(args.parts):
        web = await web_parts(args)
    runs: list[dict[str, float]] = []
    if "redis" in args.parts:
        from lockgate.broker.testing import run_broker

        async with run_broker() as b:
            for run in range(args.runs):
                runs.append(await redis_rates(args.events, b.target, b.proc.pid, run))
    print(
        f"runs={args.runs} events={args.events} conns={args.conns} "
        f"fanout_events={args.fanout_events} cpus={os.cpu_count()} "
        f"load={load[0]:.1f}->{os.getloadavg()[0]:.1f}"
    )
    if web.get("http"):
        print("HTTP batched ingest (batches of 200, 4 clients):", _fmt(web["http"], "events/s"))
        print("  server CPU per event:", _fmt(web["http_cpu"], "us", ".1f"))
    if web.get("wspub"):
        print("WebSocket publish (4 sockets, 100 frames in flight each):", end=" ")
        print(_fmt(web["wspub"], "events/s"))
        print("  server CPU per event:", _fmt(web["wspub_cpu"], "us", ".1f"))
    if web.get("fan"):
        print(f"WebSocket fan-out to {args.conns} sockets:", _fmt(web["fan"], "frames/s"))
        print(
            f"  p99 latency publish->receipt, paced at <=50 events/s "
            f"(<={50 * args.conns} frames/s):",
            _fmt(web["p99"], "ms", ".1f"),
        )
    if runs:

        def col(name: str) -> list[float]:
            return [r[name] for r in runs]

        print(f"Redis stream (hiredis: {_hiredis()}):")
        print(
            "  redis-py alone, XREADGROUP 500 + pipelined XACK:", _fmt(col("redis_py"), "entries/s")
        )
        print(
            "  standalone gateway (RemoteAPI) -> broker process:",
            _fmt(col("standalone"), "entries/s"),
        )
        print(
            "    ratio standalone / redis-py:",
            _fmt([r["standalone"] / r["redis_py"] for r in runs], "x", ".2f"),
        )
        print(
            "    CPU per entry: gateway",
            _fmt(col("gw_cpu_us"), "us", ".1f"),
            "| broker",
            _fmt(col("broker_cpu_us"), "us", ".1f"),
            "| redis-py alone",
            _fmt(col("redis_py_cpu_us"), "us", ".1f"),
        )
        print(
            "  embedded gateway (LocalAPI, broker in the same process):",
            _fmt(col("embedded"), "entries/s"),
        )
        print(
            "    ratio embedded / redis-py:",
            _fmt([r["embedded"] / r["redis_py"] for r in runs], "x", ".2f"),
        )


def _hiredis() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--fanout-events", dest="fanout_events", type=int, default=500)
    ap.add_argument("--serve", type=int, default=0)
    ap.add_argument(
        "--parts", nargs="+", default=["http", "ws", "redis"], choices=["http", "ws", "redis"]
    )
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(a.serve) if a.serve else main(a))
