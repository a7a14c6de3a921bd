"""Benchmark presence: how long after an agent connects, and after it disconnects, a watcher
sees the ``conversation.presence`` notice (the issue's figure: offline within the grace
period plus 100 ms, p99).

    .venv/bin/python bench/presence_bench.py [--rounds 50] [--grace 1.0]

A ``lockgate serve`` process (SQLite, fresh data dir, ``presence_grace`` = ``--grace``); the
watcher (ann) holds a Subscribe stream on ``$conv.<id>.presence`` of a group with bob; each
round bob opens a Subscribe stream (online) and closes it (offline after the grace). Printed:
median and p99 of connect -> online and of disconnect -> offline minus the grace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import (
    broker_pb2,
    broker_pb2_grpc,
    conversation_pb2,
    conversation_pb2_grpc,
)


def _p99(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.99) - 1)]


async def _open(stub: broker_pb2_grpc.BrokerServiceStub, key: str, pattern: str) -> object:
    call = stub.Subscribe(metadata=(("authorization", f"Bearer {key}"),))
    await call.write(broker_pb2.SubscribeRequest(open=broker_pb2.SubscribeOpen(pattern=pattern)))
    first = await call.read()
    assert first is not grpc.aio.EOF and first.HasField("subscribed")
    return call


async def main(rounds: int, grace: float) -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-presence-") as data:
        store = SqliteStore(data)
        await store.open()
        ann = (await create_key(store, "acme", "ann", []))[0]
        bob = (await create_key(store, "acme", "bob", []))[0]
        await store.close()
        cfg = Path(data) / "lockgate.toml"
        cfg.write_text(f"[broker]\npresence_grace = {grace}\n")
        async with run_broker(data_dir=data, extra_args=["--config", str(cfg)]) as b:
            ch = grpc.aio.insecure_channel(b.target)
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            conv = conversation_pb2_grpc.ConversationServiceStub(ch)
            made = await conv.CreateConversation(
                conversation_pb2.CreateConversationRequest(
                    type=conversation_pb2.CONVERSATION_TYPE_GROUP, participants=["bob"]
                ),
                metadata=(("authorization", f"Bearer {ann}"),),
            )
            cid = made.conversation.conversation_id
            watch = await _open(stub, ann, f"$conv.{cid}.presence")
            seen: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

            async def pump() -> None:
                while (msg := await watch.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                    for d in msg.deliveries:
                        body = json.loads(d.event.text_data)
                        if body["agent"] == "bob":
                            seen.put_nowait((body["status"], time.perf_counter()))

            task = asyncio.create_task(pump())
            online: list[float] = []
            offline: list[float] = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                call = await _open(stub, bob, "bob.inbox")
                status, t1 = await asyncio.wait_for(seen.get(), 10)
                assert status == "online", status
                online.append(t1 - t0)
                t2 = time.perf_counter()
                call.cancel()  # type: ignore[attr-defined]
                status, t3 = await asyncio.wait_for(seen.get(), grace + 10)
                assert status == "offline", status
                offline.append(t3 - t2 - grace)
            task.cancel()
            await ch.close()
    ms = 1000.0
    print(f"presence, {rounds} rounds, grace {grace:g} s")
    print(
        f"  connect -> online:            median {statistics.median(online) * ms:6.1f} ms"
        f"  p99 {_p99(online) * ms:6.1f} ms"
    )
    print(
        f"  disconnect -> offline - grace: median {statistics.median(offline) * ms:6.1f} ms"
        f"  p99 {_p99(offline) * ms:6.1f} ms"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--grace", type=float, default=1.0)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.grace))
