"""One bench process: ``python -m bench.worker ROLE JSON_ARGS`` (see bench/common.py)."""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Awaitable, Callable

from bench import client_workers, lg_workers, nats_workers
from bench.common import Args, Control, Result, emit

Role = Callable[[Args, Control], Awaitable[Result]]

ROLES: dict[str, Role] = {
    "lg-batch-pub": lg_workers.batch_publisher,
    "lg-unary-pub": lg_workers.unary_publisher,
    "lg-latency-pub": lg_workers.latency_publisher,
    "lg-sub": lg_workers.subscriber,
    "lg-responder": lg_workers.raw_responder,
    "lg-requester": lg_workers.raw_requester,
    "client-batch-pub": client_workers.batch_publisher,
    "client-task-pub": client_workers.task_publisher,
    "client-latency-pub": client_workers.latency_publisher,
    "client-sub": client_workers.subscriber,
    "client-responder": client_workers.responder,
    "client-requester": client_workers.requester,
    "nats-task-pub": nats_workers.task_publisher,
    "nats-responder": nats_workers.responder,
    "nats-requester": nats_workers.requester,
    "nats-pub": nats_workers.core_publisher,
    "nats-latency-pub": nats_workers.latency_publisher,
    "nats-sub": nats_workers.core_subscriber,
    "js-pub": nats_workers.js_publisher,
    "js-sub": nats_workers.js_subscriber,
}


async def _main(role: Role, args: Args) -> None:
    control = await Control().open()
    try:
        result = await role(args, control)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    emit("RESULT", result)


def main() -> None:
    role, args = ROLES[sys.argv[1]], json.loads(sys.argv[2])
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_main(role, args))
    else:
        uvloop.run(_main(role, args))


if __name__ == "__main__":
    main()
