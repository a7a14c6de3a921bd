"""Client CPU per ``await c.publish()`` event, in process, against a fake stream that answers
every frame at once: the client's own cost with and without ``timeout=``, no broker and no
gRPC in the figure.

    .venv/bin/python bench/publish_cpu.py                      # 64 tasks, 7 rounds of 200,000
    .venv/bin/python bench/publish_cpu.py --tasks 8 --rounds 5 --events 100000

Each round publishes ``--events`` events from ``--tasks`` concurrent tasks on uvloop, first
without a timeout then with ``timeout=--timeout``, alternating; it prints the process CPU per
event of each side as the median and min-max over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import uvloop

from lockgate.broker.v1 import broker_pb2
from lockgate.clients import Client
from lockgate.clients._publisher import Publisher

DATA = b"x" * 128


class FakeCall:
    """A ``Publish`` stream call that answers each frame as it is written, in order."""

    def __init__(self, publisher: list[Publisher]) -> None:
        self._publisher = publisher
        self._answers: asyncio.Queue[broker_pb2.PublishResponse] = asyncio.Queue()
        self._next: int | None = None

    async def write(self, request: bytes) -> None:
        # Frames are written in batch_id order, numbered one after another: the first write
        # is the lowest id in flight, each later one the next id.
        inflight = self._publisher[0]._inflight
        batch_id = min(inflight) if self._next is None else self._next
        self._next = batch_id + 1
        batch = inflight[batch_id]
        self._answers.put_nowait(
            broker_pb2.PublishResponse(batch_id=batch_id, ids=range(len(batch)))
        )

    async def _responses(self) -> AsyncIterator[broker_pb2.PublishResponse]:
        while True:
            yield await self._answers.get()

    def __aiter__(self) -> AsyncIterator[broker_pb2.PublishResponse]:
        return self._responses()

    def cancel(self) -> bool:
        return True


async def one_round(tasks: int, events: int, timeout: float | None) -> float:
    """Process CPU seconds per event of ``events`` publishes from ``tasks`` tasks."""
    client = Client()
    holder: list[Publisher] = []
    publisher = Publisher(lambda: FakeCall(holder))
    holder.append(publisher)
    client._publisher = publisher
    client._connected = True
    each = events // tasks

    async def loop() -> None:
        for _ in range(each):
            await client.publish("bench.cpu", DATA, timeout=timeout)

    await client.publish("bench.cpu", DATA)  # the stream opens
    cpu0 = time.process_time()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    cpu = time.process_time() - cpu0
    await publisher.close()
    return cpu / (each * tasks)


async def main(args: argparse.Namespace) -> None:
    plain: list[float] = []
    timed: list[float] = []
    for _ in range(args.rounds):
        plain.append(await one_round(args.tasks, args.events, None))
        timed.append(await one_round(args.tasks, args.events, args.timeout))
    for label, values in (("no timeout", plain), (f"timeout={args.timeout}", timed)):
        us = [v * 1e6 for v in values]
        print(
            f"{label:>14}: {statistics.median(us):.2f} us per event "
            f"({min(us):.2f}-{max(us):.2f}, {args.rounds} rounds of {args.events:,} events, "
            f"{args.tasks} tasks)"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="bench/publish_cpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=64)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--timeout", type=float, default=30.0)
    uvloop.run(main(p.parse_args()))
