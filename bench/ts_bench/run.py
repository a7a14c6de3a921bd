"""Publish -> subscribe with the TypeScript client, beside the Python client and the NATS
JavaScript client (``nats`` on npm), in the same run.

Each run starts, for each side in turn, a fresh server (``lockgate serve`` with a fresh data
dir, or a fresh ``nats-server`` on a free port) and one client process that subscribes, then
publishes EVENTS events of 128 bytes in waves of WAVE concurrent publishes (the simple call:
``c.publish`` in both Lockgate clients, which coalesce concurrent calls into frames;
``nc.publish`` + ``flush`` in nats) and waits until its subscriber received them all:

- ``ts``   bench/ts_bench/bench.mjs lockgate (the TypeScript client, clients/typescript)
- ``py``   bench/ts_bench/py_side.py (the Python client)
- ``nats`` bench/ts_bench/bench.mjs nats (nats.js against a fresh nats-server, core pub/sub;
  ``--nats-url nats://127.0.0.1:4222`` uses the machine's running one instead)

Reported per side: events/s, the client process's CPU per event and the server's, as median
(min-max) over ``--runs``; and the same-run ratios ts/py and ts/nats. Needs the TypeScript
client built (``cd clients/typescript && npm ci && npm run build``).

    .venv/bin/python bench/ts_bench/run.py --runs 3 --events 20000 --wave 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.procs import cpu_of, lockgate_server, nats_server

HERE = Path(__file__).resolve().parent
SIDES = ("ts", "py", "nats")


def command(side: str, where: dict[str, Any], events: int, wave: int) -> list[str]:
    if side == "py":
        return [sys.executable, str(HERE / "py_side.py"), where["target"], str(events), str(wave)]
    kind, address = ("nats", where["url"]) if side == "nats" else ("lockgate", where["target"])
    return ["node", str(HERE / "bench.mjs"), kind, address, str(events), str(wave)]


@contextlib.asynccontextmanager
async def server(
    side: str, tmp: Path, nats_url: str | None
) -> AsyncIterator[tuple[dict[str, Any], int]]:
    if side == "nats" and nats_url:
        yield {"url": nats_url}, 0  # a running server (its CPU is not measured)
    elif side == "nats":
        async with nats_server(tmp) as s:
            yield s
    else:
        async with lockgate_server(tmp, []) as s:
            yield s


async def one(
    side: str, events: int, wave: int, tmp: Path, nats_url: str | None
) -> dict[str, float]:
    async with server(side, tmp, nats_url) as (where, pid):
        cpu0 = cpu_of(pid)
        proc = await asyncio.create_subprocess_exec(
            *command(side, where, events, wave),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(HERE.parents[1])),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 600)
        if proc.returncode != 0:
            raise RuntimeError(f"{side} failed: {err.decode()[-2000:]}")
        r: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        r["server_cpu_seconds"] = cpu_of(pid) - cpu0
    r["rate"] = r["events"] / r["seconds"]
    r["client_us"] = r["cpu_seconds"] / r["events"] * 1e6
    r["server_us"] = r["server_cpu_seconds"] / r["events"] * 1e6
    return r


def stat(values: list[float], fmt: str) -> str:
    mid, low, high = (fmt.format(f(values)) for f in (statistics.median, min, max))
    return f"{mid} ({low}-{high})"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--wave", type=int, default=1_000)
    p.add_argument(
        "--nats-url",
        help="use this nats-server (e.g. nats://127.0.0.1:4222) instead of a fresh one per run; "
        "its CPU is then not measured",
    )
    args = p.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for side in SIDES:  # alternated, so every side sees the same machine
                r = await one(side, args.events, args.wave, Path(tmp), args.nats_url)
                results[side].append(r)
                print(
                    f"run {run + 1} {side:4}: {r['rate']:,.0f}/s, client {r['client_us']:.1f} us"
                    f"/event, server {r['server_us']:.1f} us/event",
                    flush=True,
                )
    print(f"\nload after: {os.getloadavg()[0]:.2f}")
    print("| side | events/s | client CPU/event | server CPU/event |")
    print("|---|---|---|---|")
    for side in SIDES:
        rs = results[side]
        print(
            f"| {side} | {stat([r['rate'] for r in rs], '{:,.0f}')} "
            f"| {stat([r['client_us'] for r in rs], '{:.1f}')} us "
            f"| {stat([r['server_us'] for r in rs], '{:.1f}')} us |"
        )
    for base in ("py", "nats"):
        pairs = list(zip(results["ts"], results[base], strict=True))
        rate = [t["rate"] / b["rate"] for t, b in pairs]
        cpu = [t["client_us"] / b["client_us"] for t, b in pairs]
        print(
            f"ts/{base} (same run): events/s {stat(rate, '{:.2f}')}x, "
            f"client CPU/event {stat(cpu, '{:.2f}')}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
