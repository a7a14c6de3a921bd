"""The Python client's side of bench/ts_bench/run.py, the same work as bench.mjs's lockgate side:
publish -> subscribe of EVENTS events of 128 bytes, in waves of WAVE concurrent
``c.publish()`` calls, received by a subscriber of the same client (``sub.batches()``).

``python bench/ts_bench/py_side.py TARGET EVENTS WAVE`` prints {events, seconds, cpu_seconds}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from lockgate.clients import Client

DATA = b"x" * 128
SUBJECT = "tsbench.x"


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def main(target: str, events: int, wave: int) -> dict[str, float]:
    async with Client(target) as c, c.subscribe(SUBJECT, max_in_flight=100_000) as sub:

        async def run() -> None:
            for sent in range(0, events, wave):
                n = min(wave, events - sent)
                await asyncio.gather(*(c.publish(SUBJECT, DATA) for _ in range(n)))

        async def received() -> None:
            got = 0
            async for batch in sub.batches():
                got += len(batch)
                if got >= events:
                    return

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(run(), received())
        return {
            "events": events,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": cpu_seconds() - cpu0,
        }


if __name__ == "__main__":
    target, n, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(main(target, n, w))))
