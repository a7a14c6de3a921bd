"""The message logger's throughput into PostgreSQL (issue 9): not a test, a measurement.

Two phases, each against a fresh ``nats-server -js`` on a free port and a fresh PostgreSQL
database (created and dropped here):

* ``drain``: the stream is filled first with ``--events`` events (batches of
  ``--batch-size``, JSON data of about 128 bytes), then one MessageLogger starts; the figure
  is events written per second from its start until its lag is 0 (sustained: the whole
  backlog, tens of seconds, not a burst).
* ``rate``: a publisher in another process appends batches at ``--rate`` events/s for
  ``--duration`` seconds while the logger runs; the lag (batches stored, not yet logged) is
  sampled every second. No lag growth = the lag stays bounded (the last samples are not
  above the early ones) and it drains to 0 within seconds of the publisher stopping.

    .venv/bin/python bench/logger_bench.py                      # both phases, defaults
    .venv/bin/python bench/logger_bench.py --phase drain --events 1000000
    .venv/bin/python bench/logger_bench.py --phase rate --rate 20000 --duration 30

Needs ``nats-server`` (PATH or /usr/sbin) and PostgreSQL (``--pg``, default the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import nats
from nats.js.api import StreamConfig

from lockgate.broker import wire
from lockgate.broker.backbone.logformat import LOG_STREAM, encode_batch
from lockgate.broker.historydb.logger import MessageLogger
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch
from lockgate.broker.store.pg_engine import connect_pool
from lockgate.broker.v1 import cloudevent_pb2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def nats_server() -> AsyncIterator[str]:
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = _free_port()
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen(
            [exe, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            yield f"nats://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


@asynccontextmanager
async def fresh_database(dsn: str) -> AsyncIterator[str]:
    name = f"lg_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    await admin.close()
    try:
        yield urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path="/" + name))
    finally:
        admin = await asyncpg.connect(dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def make_batches(count: int, size: int, worker: int = 7) -> list[Batch]:
    """``count`` batches of ``size`` events of a few subjects, as a node stores them."""
    ids = IdGenerator(worker)
    data = json.dumps({"order": 12345, "sku": "ab-123", "qty": 3, "note": "x" * 60})
    out = []
    for k in range(count):
        subject = f"orders.{('eu', 'us', 'asia')[k % 3]}.created"
        block = ids.next_block(size)
        events = []
        for i in block:
            ev = cloudevent_pb2.CloudEvent(
                id=f"o-{i}", source="/shop", spec_version="1.0", type="order.created"
            )
            ev.text_data = data
            ev.attributes["datacontenttype"].ce_string = "application/json"
            events.append(ev.SerializeToString())
        body = b"".join(wire.delivery_frames(block, wire.subject_field(subject), events))
        out.append(Batch(block[0], block[-1], "acme", subject, size, "v1", body, '["bot",[]]'))
    return out


async def fill(url: str, batches: list[Batch]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    pending = []
    for b in batches:
        subject, headers, body = encode_batch(b)
        pending.append(await js.publish_async(subject, body, headers=headers))
        if len(pending) >= 256:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await nc.close()


def _cpu_of(pid: int) -> float:
    """Seconds of CPU a process used so far (user + system), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backends(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return [r["pid"] for r in rows]


async def drain(url: str, dsn: str, events: int, size: int) -> dict[str, float]:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(StreamConfig(name=LOG_STREAM, subjects=["lglog.>"]))
    t = time.perf_counter()
    batches = make_batches(events // size, size)
    await fill(url, batches)
    print(f"  filled {events:,} events in {time.perf_counter() - t:.1f} s", flush=True)
    pool = await connect_pool(dsn, min_size=1, max_size=4)
    logger = MessageLogger(nc, pool, lag_interval=0.2)
    await logger.prepare()  # the schema is not part of the figure
    before = {pid: _cpu_of(pid) for pid in await _backends(pool)}
    cpu0 = time.process_time()
    start = time.perf_counter()
    await logger.start()
    while logger.stats.messages < len(batches):
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    py_cpu = time.process_time() - cpu0
    pg_cpu = sum(_cpu_of(pid) - before.get(pid, 0.0) for pid in await _backends(pool))
    await logger.stop()
    stored = await pool.fetchval("SELECT count(*) FROM history_events")
    await pool.close()
    await nc.close()
    assert stored == events, (stored, events)
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "logger_cpu_us_per_event": py_cpu / events * 1e6,
        "postgres_cpu_us_per_event": pg_cpu / events * 1e6,
    }


def publisher_main(url: str, rate: int, duration: float, size: int) -> None:
    """The ``rate`` phase's publisher (its own process)."""

    async def run() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        per_s = rate / size
        batches = make_batches(int(per_s * duration) + 1, size, worker=9)
        print("publishing", flush=True)
        start = time.perf_counter()
        for n, b in enumerate(batches):
            due = start + n / per_s
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            subject, headers, body = encode_batch(b)
            await js.publish_async(subject, body, headers=headers)
        await js.publish_async_completed()
        took = time.perf_counter() - start
        print(f"published {len(batches) * size / took:.0f}/s", flush=True)
        await nc.close()

    asyncio.run(run())


async def steady(url: str, dsn: str, rate: int, duration: float, size: int) -> dict[str, object]:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(StreamConfig(name=LOG_STREAM, subjects=["lglog.>"]))
    pool = await connect_pool(dsn, min_size=1, max_size=4)
    logger = MessageLogger(nc, pool, lag_interval=0.5)
    await logger.prepare()
    await logger.start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--publisher",
        url,
        str(rate),
        str(duration),
        str(size),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await proc.stdout.readline()  # "publishing": the batches are built, the clock starts
    samples: list[int] = []
    t0 = time.perf_counter()
    while proc.returncode is None and time.perf_counter() - t0 < duration + 60:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 1.0)
        except TimeoutError:
            samples.append(await logger.measure_lag() or 0)
            continue
        if line.startswith(b"published"):
            published = line.decode().split()[1]
            break
    else:
        published = "?"
    await proc.wait()
    stop = time.perf_counter()
    while (await logger.measure_lag() or 0) > 0 and time.perf_counter() - stop < 60:
        await asyncio.sleep(0.2)
    catch_up = time.perf_counter() - stop
    await logger.stop()
    expected = int(rate / size * duration + 1) * size
    stored = await pool.fetchval("SELECT count(*) FROM history_events")
    await pool.close()
    await nc.close()
    third = max(1, len(samples) // 3)
    return {
        "rate": rate,
        "published": published,
        "lag_first_third_mean_events": sum(samples[:third]) / third * size,
        "lag_last_third_mean_events": sum(samples[-third:]) / third * size,
        "lag_samples_batches": samples,
        "lag_events_max": max(samples, default=0) * size,
        "catch_up_s": round(catch_up, 2),
        "stored": stored,
        "expected": expected,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=["drain", "rate", "both"], default="both")
    ap.add_argument(
        "--pg",
        default=os.environ.get("LOCKGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}, {os.cpu_count()} cores", flush=True)
    if args.phase in ("drain", "both"):
        async with nats_server() as url, fresh_database(args.pg) as dsn:
            r = await drain(url, dsn, args.events, args.batch_size)
        print(
            f"drain: {r['events']:,.0f} events in {r['seconds']:.1f} s = "
            f"{r['events_per_s']:,.0f} events/s; CPU per event: logger "
            f"{r['logger_cpu_us_per_event']:.1f} us, PostgreSQL "
            f"{r['postgres_cpu_us_per_event']:.1f} us",
            flush=True,
        )
    if args.phase in ("rate", "both"):
        async with nats_server() as url, fresh_database(args.pg) as dsn:
            s = await steady(url, dsn, args.rate, args.duration, args.batch_size)
        print(f"rate {args.rate:,}/s for {args.duration:.0f} s: {json.dumps(s)}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher_main(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    else:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(main())
