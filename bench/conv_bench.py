"""Benchmark end-to-end encrypted conversations: a group of 10 members (the sender and 9
readers), send -> every other member has decrypted it, beside the same traffic unencrypted.

    .venv/bin/python bench/conv_bench.py [--runs 3] [--latency 200] [--messages 2000]

A ``lockgate serve`` process (SQLite, fresh data dir) and 10 public clients
(``lockgate.clients.Client``) in this process, each with its own keystore; every reader
iterates ``client.conversations.messages()`` (a live subscription, each message decrypted).

- latency: one message at a time, the time from ``send()`` until the last reader has
  decrypted it; the median and p99 of ``--latency`` messages.
- throughput: ``--messages`` sent with up to 32 sends in flight, messages per second until
  every reader has decrypted every one.

Encrypted and plaintext groups alternate ``--runs`` times (fresh groups, same broker and
clients); each figure is the median over runs, and the ratio is encrypted over plaintext.
An encrypted group send also reads the conversation's lifecycle events since the last one it
saw (one more unary call), the rotation check of ``clients._conversation_epochs``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.clients import Client

MEMBERS = 10
PAYLOAD = {"text": "x" * 100}


class Readers:
    """Every reader's live iterator; ``done(id)`` resolves once all have decrypted ``id``."""

    def __init__(self, clients: list[Client], cid: str) -> None:
        self.count: dict[int, int] = {}
        self.waiters: dict[int, asyncio.Future[None]] = {}
        self.seen = 0
        self.everything = asyncio.Event()
        self.expect = 0
        self.n = len(clients)
        self.tasks = [asyncio.create_task(self._read(c, cid)) for c in clients]

    async def _read(self, c: Client, cid: str) -> None:
        async for m in c.conversations.messages(cid):
            if m.error is not None:
                raise m.error
            assert m.data == PAYLOAD
            got = self.count[m.id] = self.count.get(m.id, 0) + 1
            if got == self.n:
                self.seen += 1
                fut = self.waiters.pop(m.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
                if self.expect and self.seen >= self.expect:
                    self.everything.set()

    def done(self, id: int) -> Awaitable[None]:
        fut = asyncio.get_running_loop().create_future()
        if self.count.get(id, 0) == self.n:
            fut.set_result(None)
        else:
            self.waiters[id] = fut
        return fut

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def one_run(
    owner: Client, others: list[Client], encrypted: bool, latency_n: int, messages: int
) -> tuple[float, float, float]:
    conv = await owner.conversations.create(
        "group", [f"m{i}" for i in range(1, MEMBERS)], encrypted=encrypted
    )
    readers = Readers(others, conv.id)
    try:
        # Warm up: until a message reaches every reader, the subscriptions are not all live.
        while True:
            sent = await owner.conversations.send(conv.id, PAYLOAD, encrypt=encrypted)
            try:
                await asyncio.wait_for(readers.done(sent.id), 0.5)
                break
            except TimeoutError:
                continue
        lat: list[float] = []
        for _ in range(latency_n):
            t0 = time.perf_counter()
            sent = await owner.conversations.send(conv.id, PAYLOAD, encrypt=encrypted)
            await readers.done(sent.id)
            lat.append(time.perf_counter() - t0)
        readers.seen = 0
        readers.expect = messages
        readers.everything.clear()
        window = asyncio.Semaphore(32)

        async def send() -> None:
            async with window:
                await owner.conversations.send(conv.id, PAYLOAD, encrypt=encrypted)

        t0 = time.perf_counter()
        await asyncio.gather(*(send() for _ in range(messages)))
        await readers.everything.wait()
        rate = messages / (time.perf_counter() - t0)
        lat.sort()
        return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], rate
    finally:
        await readers.close()


async def main(runs: int, latency_n: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp, "data"))
        store = SqliteStore(data, fsync="os")
        await store.open()
        keys = {}
        try:
            for i in range(MEMBERS):
                keys[f"m{i}"], _ = await create_key(store, "bench", f"m{i}", ())
        finally:
            await store.close()
        async with run_broker(data_dir=data, extra_args=["--fsync", "os"]) as b:
            clients = [
                await Client(
                    b.target, api_key=keys[f"m{i}"], keystore=Path(tmp, f"m{i}.keys")
                ).connect()
                for i in range(MEMBERS)
            ]
            for c in clients:
                await c.conversations.publish_key()
            figures: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
            for _ in range(runs):
                for encrypted in (True, False):
                    figures[encrypted].append(
                        await one_run(clients[0], clients[1:], encrypted, latency_n, messages)
                    )
            for c in clients:
                await c.close()
    med = {e: tuple(statistics.median(f[i] for f in figures[e]) for i in range(3)) for e in figures}
    print(
        f"group of {MEMBERS} members, {runs} runs, {latency_n} latency samples, "
        f"{messages} messages for throughput"
    )
    print(f"{'':12} {'median ms':>10} {'p99 ms':>8} {'msg/s':>8}")
    for e, name in ((True, "encrypted"), (False, "plaintext")):
        p50, p99, rate = med[e]
        print(f"{name:12} {p50 * 1e3:10.2f} {p99 * 1e3:8.2f} {rate:8.0f}")
    enc, plain = med[True], med[False]
    print(
        f"ratio (encrypted/plaintext): latency {enc[0] / plain[0]:.2f}x, "
        f"throughput {enc[2] / plain[2]:.2f}x"
    )
    for e, name in ((True, "encrypted"), (False, "plaintext")):
        rates = ", ".join(f"{f[2]:.0f}" for f in figures[e])
        print(f"  {name} msg/s per run: {rates}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--latency", type=int, default=200)
    p.add_argument("--messages", type=int, default=2000)
    a = p.parse_args()
    asyncio.run(main(a.runs, a.latency, a.messages))
