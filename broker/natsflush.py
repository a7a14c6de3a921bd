"""Waiting until the NATS server has processed what a nats-py client sent.

nats-py's ``flush()`` writes its PING straight to the socket, ahead of the commands its
flusher task still queues (a SUB, a PUB), so its PONG can come back before the server saw
them: a subscription "confirmed" that way could still miss a message published right after
from another connection (the NATS gateway's ingest test lost one so, 1 run in 100 under
load). The flusher writes its queue before the first PONG can be read, so a second PING goes
out behind everything sent before the call.

Example::

    await nc.subscribe("orders.>", cb=on_message)
    await processed(nc)  # a publish from another connection now reaches it
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client

__all__ = ["processed"]


async def processed(nc: Client, timeout: int = 10) -> None:
    """Returns once the server has processed every command sent on ``nc`` before the call;
    raises nats-py's ``FlushTimeoutError`` when a PONG takes over ``timeout`` seconds."""
    await nc.flush(timeout)
    await nc.flush(timeout)
