"""Pieces shared by the bench workers: payloads, wire encoding, counters, the worker protocol.

A worker is a separate process (``python -m bench.worker ROLE ARGS``). It talks to the
orchestrator in lines: it prints ``READY`` once connected and ``RESULT {json}`` at the end;
it reads ``GO`` (publishers: start now) and ``STOP <expected>`` (subscribers: the publishers
are done and published that many events) on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from lockgate.broker.wire import encode_varint

DATA_BYTES = 128
SUBJECT = "bench.x"
PATTERN = "bench.>"
_PAD = b"x" * (DATA_BYTES - 8)

Args = dict[str, Any]
Result = dict[str, Any]


def now_ns() -> int:
    """CLOCK_MONOTONIC: one clock for every process on the machine (Linux)."""
    return time.monotonic_ns()


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def stamped(ts_ns: int) -> bytes:
    """128 bytes of data whose first 8 carry a send time."""
    return ts_ns.to_bytes(8, "big") + _PAD


def stamp_of(data: bytes) -> int:
    return int.from_bytes(data[:8], "big")


varint = encode_varint  # the broker's own encoder: the bench frames what the broker frames


def pb_field(tag: int, value: bytes) -> bytes:
    """A length-delimited protobuf field (``tag`` is the whole key byte)."""
    return bytes((tag,)) + varint(len(value)) + value


class EventFactory:
    """CloudEvent wire bytes, each with a unique id, built around cached head and tail bytes.

    Field numbers: id=1 source=2 spec_version=3 type=4 binary_data=6 (see cloudevent.proto).
    """

    def __init__(self, source: str = "bench://publisher", type_: str = "bench.event") -> None:
        self._prefix = os.urandom(8).hex().encode()  # 16 chars; ids are 28 chars in all
        self._n = 0
        self._tail = (
            pb_field(0x12, source.encode())
            + pb_field(0x1A, b"1.0")
            + pb_field(0x22, type_.encode())
            + b"\x32"
            + varint(DATA_BYTES)
        )
        self.size = 2 + 28 + len(self._tail) + DATA_BYTES

    def events(self, count: int, data: bytes) -> list[bytes]:
        start, self._n = self._n, self._n + count
        head, prefix, tail = b"\x0a\x1c", self._prefix, self._tail + data
        return [b"%s%s%012x%s" % (head, prefix, n, tail) for n in range(start, start + count)]


def publish_frame(subject: bytes, events: list[bytes], size: int, batch_id: int) -> bytes:
    """``PublishRequest`` wire bytes (subject=1, events=2, batch_id=3); events of one size."""
    sep = b"\x12" + varint(size)
    return b"".join((pb_field(0x0A, subject), sep, sep.join(events), b"\x18", varint(batch_id)))


def publish_one_frame(subject: bytes, event: bytes) -> bytes:
    """``PublishOneRequest`` wire bytes (subject=1, event=2)."""
    return pb_field(0x0A, subject) + pb_field(0x12, event)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


@dataclass
class Counter:
    """What a subscriber saw: counts, times, and (latency runs) per-event latencies."""

    count: int = 0
    first_ns: int = 0
    first_batch: int = 0
    last_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    """Latency runs: (event id, sent at, received at) for the stage breakdown."""
    at_stop: int = 0
    stop_ns: int = 0

    def add(self, n: int) -> int:
        t = now_ns()
        if not self.count:
            self.first_ns, self.first_batch = t, n
        self.count += n
        self.last_ns = t
        return t

    def mark_stop(self) -> None:
        self.at_stop, self.stop_ns = self.count, now_ns()

    def result(self, skip_latencies: int = 200) -> Result:
        window_ns = max(self.stop_ns - self.first_ns, 1)
        rate = (self.at_stop - self.first_batch) / (window_ns / 1e9) if self.at_stop > 1 else 0.0
        out: Result = {"received": self.count, "received_at_stop": self.at_stop, "rate": rate}
        if self.samples:
            out["samples_by_id"] = self.samples
        lat = sorted(self.latencies_ns[skip_latencies:])
        if lat:
            out.update(
                p50_us=percentile(lat, 0.50) / 1e3,
                p90_us=percentile(lat, 0.90) / 1e3,
                p99_us=percentile(lat, 0.99) / 1e3,
                max_us=lat[-1] / 1e3,
                samples=len(lat),
            )
        return out


def emit(kind: str, payload: Result | None = None) -> None:
    print(kind if payload is None else f"{kind} {json.dumps(payload)}", flush=True)


class Control:
    """The orchestrator's commands on stdin."""

    def __init__(self) -> None:
        self._reader = asyncio.StreamReader()
        self._go = asyncio.Event()
        self._stop: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> Control:
        loop = asyncio.get_running_loop()
        proto = asyncio.StreamReaderProtocol(self._reader)
        await loop.connect_read_pipe(lambda: proto, sys.stdin)
        self._stop = loop.create_future()
        self._task = asyncio.create_task(self._listen())
        return self

    async def _listen(self) -> None:
        assert self._stop is not None
        while line := await self._reader.readline():
            word, _, rest = line.decode().strip().partition(" ")
            if word == "GO":
                self._go.set()
            elif word == "STOP" and not self._stop.done():
                self._stop.set_result(int(rest or 0))
        if not self._stop.done():  # the orchestrator went away
            self._stop.set_result(0)

    async def go(self) -> None:
        await self._go.wait()

    async def stop(self) -> int:
        assert self._stop is not None
        return await self._stop


async def receive_until_stopped(
    receive: Coroutine[Any, Any, None],
    counter: Counter,
    control: Control,
    *,
    idle: float = 1.0,
    cap: float = 60.0,
) -> None:
    """Runs ``receive`` until STOP, then until ``expected`` arrived, ``idle`` s of silence, or
    ``cap`` s."""
    task = asyncio.create_task(receive)
    stop = asyncio.create_task(control.stop())
    await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # the stream ended early (an error is in the result): wait for STOP
        counter.mark_stop()
        await stop
        await task
        return
    counter.mark_stop()
    expected = stop.result()
    t0 = now_ns()
    while not task.done():
        t = now_ns()
        quiet = (t - max(counter.last_ns, t0)) / 1e9
        if counter.count >= expected or quiet > idle or (t - t0) / 1e9 > cap:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def paced(rate: float, duration: float) -> AsyncIterator[int]:
    """Yields slot numbers at ``rate`` per second for ``duration`` seconds (sends late slots at
    once, so a coarse timer gives small bursts, never a lower rate)."""
    start = time.monotonic()
    end = start + duration
    n = 0
    while (t := time.monotonic()) < end:
        due = start + n / rate
        if due > t:
            await asyncio.sleep(due - t)
        yield n
        n += 1
