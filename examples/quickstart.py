"""Publish a typed event and read it back on a durable subscription.

LOCKGATE_SERVER=127.0.0.1:50051 python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from lockgate.clients import Client


@dataclass
class Alert:
    level: str
    text: str


async def main() -> None:
    target = os.environ.get("LOCKGATE_SERVER", "127.0.0.1:50051")
    async with Client(target, api_key=os.environ.get("LOCKGATE_API_KEY")) as c:
        event_id = await c.publish("alerts.disk", Alert("warn", "disk 91% full"))
        async with c.subscribe("alerts.>", durable="pager", start="all", model=Alert) as sub:
            async for msg in sub:
                print(msg.id == event_id, msg.data.level, msg.data.text)
                await msg.ack()
                break


if __name__ == "__main__":
    asyncio.run(main())
