"""Cluster mode (issue 9): three ``lockgate serve`` nodes on one JetStream, one PostgreSQL
database and one Redis, driven by the public Python client.

    .venv/bin/python bench/cluster_bench.py [--runs 3] [--duration 5] [--rate 5000]
        [--nats nats://127.0.0.1:4222] [--pg postgresql://postgres@127.0.0.1:5432/test]
        [--redis redis://127.0.0.1:6379/0] [--part durable|cpu|failover] [--trials 5]
        [--profile]

Three figures, the sides of each alternating the sides so they see the same machine:

1. durable: the ``durable`` scenario of bench/run.py (``publish_batch_async`` of 500 events,
   window 8 -> a durable subscriber iterating ``sub.batches()`` and acking each batch) with
   the publisher on node 1 and the subscriber on node 2, against nats-py JetStream
   (``publish_async`` -> pull consumer, one message per event, explicit acks) in the same run.
2. cpu: CPU per delivered event at the same offered load (``--rate`` events/s, paced batches
   of 500) and the same durable subscriber: the cluster (the three nodes' CPU summed; the
   publisher on node 1, the subscriber on node 2) against one embedded ``lockgate serve``
   (SQLite). NATS, PostgreSQL and Redis are shared servers and not counted.
3. failover (``--trials``): a client given nodes 1 and 2 publishing from 8 tasks, kill -9 of
   node 1 under load: the outage, and acknowledged events missing from history.

``--profile`` (``--native``: with C frames): one more cluster run of each chosen part
(durable, cpu) with every node under py-spy; writes
bench/profiles/cluster-PART-nodeN.speedscope.json and prints each node's top functions by
self time (node 1 takes the publishes, node 2 serves the subscriber).

Every run gets a fresh database, JetStream stream, subject prefix and Redis key prefix, and
removes them after. Needs the three servers running (the defaults above). Not a test: never
in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Args, Result, now_ns
from bench.procs import PySpy, cpu_of
from bench.profiling import format_top, top_self
from bench.report import describe
from bench.scenarios import SCENARIOS, Side, _measure, _workers, run_side
from lockgate.broker.testing import run_broker

DURABLE = next(s for s in SCENARIOS if s.name == "durable")
PROFILES = Path(__file__).resolve().parent / "profiles"


@contextlib.asynccontextmanager
async def cluster(nats_url: str, pg: str, redis_url: str) -> AsyncIterator[list[tuple[str, int]]]:
    """Three fresh nodes: [(target, pid)] each; their database, stream and prefixes removed
    after."""
    import asyncpg
    import nats

    tag = uuid.uuid4().hex[:10]
    db, stream = f"lgbench_{tag}", f"LGB_{tag}"
    admin = await asyncpg.connect(pg)
    await admin.execute(f"CREATE DATABASE {db} TEMPLATE template0")
    dsn = pg.rsplit("/", 1)[0] + "/" + db
    args = [
        *("--backbone", nats_url, "--store", dsn, "--limiter", redis_url),
        *("--limiter-prefix", f"lgb:{tag}:", "--backbone-stream", stream),
        *("--backbone-prefix", f"b{tag}"),
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            nodes = await asyncio.gather(
                *(stack.enter_async_context(run_broker(extra_args=args)) for _ in range(3))
            )
            try:
                yield [(n.target, n.proc.pid) for n in nodes]
            finally:
                await asyncio.gather(*(n.terminate() for n in nodes), return_exceptions=True)
    finally:
        with contextlib.suppress(Exception):
            nc = await nats.connect(nats_url)
            await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
            await nc.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin.close()


async def cluster_side(
    side: Side, a: argparse.Namespace, tmp: Path, pub_extra: Args, profile: str = ""
) -> Result:
    """One measured run of ``side``'s workers on a fresh cluster: publisher on node 1,
    subscriber on node 2; the server CPU is the three nodes' sum. With ``profile`` (a part's
    name) every node runs under py-spy while the load runs."""
    async with cluster(a.nats, a.pg, a.redis) as nodes:
        (pub_target, _), (sub_target, _), _ = nodes
        pids = [pid for _, pid in nodes]
        side = Side(
            side.label,
            side.server,
            (side.sub[0], {**side.sub[1], "target": sub_target}),
            [(role, {**args, **pub_extra, "target": pub_target}) for role, args in side.pubs],
        )
        # What the nodes spend with nothing to do (leases, policy polls, the logger), measured
        # before the workers start: the subscriber's rate runs from the first event it gets,
        # the publisher's stream-opening one, so nothing may wait between that and the load
        # (an idle pause there cut the cluster's rates to about 70%: 5 s of events over 7).
        idle0 = sum(cpu_of(p) for p in pids)
        await asyncio.sleep(2.0)
        idle = (sum(cpu_of(p) for p in pids) - idle0) / 2.0
        spies = (
            [
                await PySpy.attach(
                    p,
                    PROFILES / f"cluster-{profile}-node{n}.speedscope.json",
                    native=a.native,
                )
                for n, p in enumerate(pids, 1)
            ]
            if profile
            else []
        )
        # _workers merges conn into each worker's args: the targets above must win.
        async with _workers(side, {}, a.duration, tmp) as (sub, pubs):
            each0 = [cpu_of(p) for p in pids]
            cpu0, t0 = sum(each0), now_ns()
            result = await _measure(sub, pubs, pids[0])
            wall = (now_ns() - t0) / 1e9
            # Each node's share of a core: node 1 takes the publishes, node 2 the subscriber.
            result["cpu_nodes"] = [
                round((cpu_of(p) - c) / wall, 3) for p, c in zip(pids, each0, strict=True)
            ]
            result["cpu_server"] = (sum(cpu_of(p) for p in pids) - cpu0) / wall
            result["wall"] = wall
            rate = float(result.get("rate") or 0.0)
            if rate > 0:
                result["cpu_us_server"] = result["cpu_server"] / rate * 1e6
            result["cpu_idle_server"] = idle
        for spy in spies:
            await spy.stop()
    for n in range(1, len(spies) + 1):
        out = PROFILES / f"cluster-{profile}-node{n}.speedscope.json"
        print(f"  node {n}: top functions by self time (py-spy, idle excluded) in {out}")
        print("\n".join("    " + line for line in format_top(top_self(out, 25)).splitlines()))
    return result


async def profiled(label: str, side: Side, a: argparse.Namespace, tmp: Path) -> None:
    """One more cluster run of ``side`` with every node under py-spy."""
    PROFILES.mkdir(exist_ok=True)
    print(f"  profiled run ({label}):", flush=True)
    await _safe(f"profiled {label}", cluster_side(side, a, tmp, {}, profile=label))


async def failover_trial(a: argparse.Namespace) -> Result:
    """One client given nodes 1 and 2, ``await c.publish()`` from 8 tasks; after 2 s node 1
    (the one it is connected to) gets kill -9. Returns the outage (the longest wait between
    two acknowledged publishes from the kill on), and how many acknowledged events history
    (read on node 3) does not have after 90 s (the logger redelivers what the dead node
    held)."""
    from lockgate.clients import Client, LockgateError

    async with cluster(a.nats, a.pg, a.redis) as nodes:
        (t1, pid1), (t2, _), (t3, _) = nodes
        acked: list[tuple[int, int]] = []  # (monotonic ns, id)
        stop = asyncio.Event()
        client = await Client([t1, t2]).connect()

        async def publisher(k: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                with contextlib.suppress(LockgateError):  # not acknowledged: not counted
                    i = await client.publish(f"fo.{k}", {"n": n})
                    acked.append((now_ns(), i))

        tasks = [asyncio.create_task(publisher(k)) for k in range(8)]
        await asyncio.sleep(2.0)
        before = len(acked)
        killed = now_ns()
        os.kill(pid1, 9)
        deadline = killed + 30 * 10**9
        while len(acked) == before and now_ns() < deadline:
            await asyncio.sleep(0.005)
        resumed = next((t for t, _ in acked[before:] if t >= killed), 0)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
        every = {i for _, i in acked}
        async with Client(t3) as reader:
            missing = every
            end = now_ns() + 90 * 10**9
            while missing and now_ns() < end:  # the logger copies the log into PostgreSQL
                stored = {e.id async for e in reader.query_events("fo.>", page_size=1000)}
                missing = every - stored
                if missing:
                    await asyncio.sleep(0.5)
    # The outage: the longest wait between two acknowledgements across and after the kill
    # (a reply already on its way at the kill does not count as resumed).
    times = sorted(t for t, _ in acked)
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= killed]
    return {
        "resume_s": max(gaps) / 1e9 if resumed and gaps else float("inf"),
        "acked": len(every),
        "lost": len(missing),
        "history_s": (now_ns() - killed) / 1e9,  # kill -> every acked event in history
        "missing": sorted(missing)[:5],
    }


def _paced(side: Side, rate: float) -> Side:
    pubs = [(role, {**args, "rate": rate}) for role, args in side.pubs]
    return Side(side.label, side.server, side.sub, pubs)


async def _safe(label: str, coro: Any) -> Result:
    try:
        r: Result = await coro
    except Exception as exc:  # a failed run is reported, the others go on
        r = {"error": f"{type(exc).__name__}: {exc}", "rate": 0.0}
    # A side that delivered nothing reports no rate (seen from the JetStream side under
    # load): the summary counts it as 0 rather than failing on it.
    r.setdefault("rate", 0.0)
    if r.get("published"):
        # Every event is delivered in the end (lost 0): server CPU over the whole run (drain
        # included) per published event does not depend on how late deliveries were.
        r["cpu_us_published"] = r["cpu_server"] * r["wall"] / r["published"] * 1e6
    idle = f"; idle nodes {r['cpu_idle_server']:.0%}" if "cpu_idle_server" in r else ""
    idle += f"; server {r.get('cpu_us_published', 0):.1f} us/published event"
    if "cpu_nodes" in r:
        idle += "; nodes " + "/".join(f"{c:.0%}" for c in r["cpu_nodes"])
    print(f"  {label:<24} {describe(r, 'throughput')}{idle}", flush=True)
    return r


def _med(rs: list[Result], key: str) -> str:
    xs = [float(r.get(key) or 0.0) for r in rs] or [0.0]
    return f"{statistics.median(xs):,.1f} ({min(xs):,.1f}-{max(xs):,.1f})"


async def main(a: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as t:
        tmp = Path(t)
        if "durable" in a.part:
            print("\n== durable: 3 nodes (pub on node 1, sub on node 2) vs JetStream", flush=True)
            lg: list[Result] = []
            js: list[Result] = []
            for i in range(1, a.runs + 1):
                lg.append(
                    await _safe(f"run {i} cluster", cluster_side(DURABLE.lockgate, a, tmp, {}))
                )
                js.append(
                    await _safe(
                        f"run {i} jetstream", run_side(DURABLE.baseline, a.duration, tmp, [])
                    )
                )
            ratio = statistics.median(r["rate"] for r in lg or [{"rate": 0}]) / max(
                statistics.median(r["rate"] for r in js or [{"rate": 0}]), 1e-9
            )
            print(
                f"  durable: cluster {_med(lg, 'rate')}/s | jetstream {_med(js, 'rate')}/s | "
                f"ratio {ratio:.2f}x (goal >= 3x) | cpu us/event server "
                f"{_med(lg, 'cpu_us_server')} vs {_med(js, 'cpu_us_server')}",
                flush=True,
            )
            if a.profile:
                await profiled("durable", DURABLE.lockgate, a, tmp)
        if "cpu" in a.part:
            print(f"\n== cpu: {a.rate:,.0f} events/s offered, cluster vs embedded", flush=True)
            paced = _paced(DURABLE.lockgate, a.rate)
            cl: list[Result] = []
            em: list[Result] = []
            for i in range(1, a.runs + 1):
                cl.append(await _safe(f"run {i} cluster", cluster_side(paced, a, tmp, {})))
                em.append(await _safe(f"run {i} embedded", run_side(paced, a.duration, tmp, [])))
            ratio = statistics.median(r.get("cpu_us_published", 0.0) for r in cl or [{}]) / max(
                statistics.median(r.get("cpu_us_published", 0.0) for r in em or [{}]), 1e-9
            )
            print(
                f"  server cpu us/published event: cluster (3 nodes) "
                f"{_med(cl, 'cpu_us_published')} | embedded {_med(em, 'cpu_us_published')} | "
                f"ratio {ratio:.2f}x (goal <= 1.5x); per delivered event (run.py's figure) "
                f"{_med(cl, 'cpu_us_server')} vs {_med(em, 'cpu_us_server')}; "
                f"rates {_med(cl, 'rate')} vs {_med(em, 'rate')}",
                flush=True,
            )
            if a.profile:
                await profiled("cpu", paced, a, tmp)
        if "failover" in a.part:
            print(f"\n== failover: kill -9 of the client's node, {a.trials} trials", flush=True)
            trials: list[Result] = []
            for i in range(1, a.trials + 1):
                try:
                    r = await failover_trial(a)
                except Exception as exc:  # a failed trial is reported, the others go on
                    r = {"error": f"{type(exc).__name__}: {exc}", "resume_s": float("inf")}
                trials.append(r)
                print(f"  trial {i}: {r}", flush=True)
            ok = [r["resume_s"] for r in trials if "error" not in r]
            lost = sum(int(r.get("lost", 0)) for r in trials)
            acked = sum(int(r.get("acked", 0)) for r in trials)
            if ok:
                print(
                    f"  failover: resumed after {statistics.median(ok):.2f} s median "
                    f"({min(ok):.2f}-{max(ok):.2f}) (goal <= 5 s); acknowledged events lost "
                    f"{lost} of {acked} (goal 0); failed trials {len(trials) - len(ok)}",
                    flush=True,
                )
    print(f"\nload average at end: {os.getloadavg()}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/cluster_bench.py", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--rate", type=float, default=5000.0, help="offered events/s for `cpu`")
    p.add_argument(
        "--part", action="append", choices=["durable", "cpu", "failover"], help="default: all"
    )
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--trials", type=int, default=5, help="failover trials (default 5)")
    p.add_argument("--profile", action="store_true", help="one more run per part under py-spy")
    p.add_argument("--native", action="store_true", help="--profile with C frames (py-spy)")
    a = p.parse_args(argv)
    a.part = a.part or ["durable", "cpu", "failover"]
    return a


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
