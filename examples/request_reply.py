"""An agent that answers requests, and a caller that asks it.

LOCKGATE_SERVER=127.0.0.1:50051 python examples/request_reply.py
"""

from __future__ import annotations

import asyncio
import os

from lockgate.clients import Client


async def responder(c: Client, ready: asyncio.Event) -> None:
    async with c.subscribe("agents.math.add") as sub:
        ready.set()
        async for msg in sub:
            numbers = msg.data
            await msg.respond({"sum": sum(numbers)})
            return


async def main() -> None:
    target = os.environ.get("LOCKGATE_SERVER", "127.0.0.1:50051")
    async with Client(target, api_key=os.environ.get("LOCKGATE_API_KEY")) as c:
        ready = asyncio.Event()
        task = asyncio.create_task(responder(c, ready))
        await ready.wait()
        reply = await c.request("agents.math.add", [1, 2, 39], timeout=5)
        print(reply.data)
        await task


if __name__ == "__main__":
    asyncio.run(main())
