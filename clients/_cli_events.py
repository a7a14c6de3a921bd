"""``lockgate pub | sub | request | history``: events in and out of a broker.

Example::

    lockgate pub orders.created '{"order": 7}'
    lockgate sub 'orders.>' --durable billing --ack --count 10
    lockgate history 'orders.>' --since -1h --limit 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc

from lockgate.clients._cli_kit import (
    TextSyntax,
    client_of,
    common_arguments,
    event_json,
    guard,
    print_json,
)
from lockgate.clients._errors import LockgateError, from_rpc_error
from lockgate.clients._progress import Progress

__all__ = ["add_event_commands"]


def add_event_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], syntax: TextSyntax
) -> None:
    """Register pub, sub, request and history on ``lockgate``'s subparsers."""
    p = subparsers.add_parser("pub", help="publish an event")
    p.add_argument("subject")
    p.add_argument("data", nargs="?", default="-", help="JSON or text; '-' reads stdin")
    p.add_argument("--type", default="lockgate.event")
    p.add_argument("--source")
    p.add_argument("--count", type=int, default=1, help="publish it N times (concurrently)")
    common_arguments(p)
    p.set_defaults(func=guard(_pub))

    p = subparsers.add_parser("sub", help="subscribe and print one JSON line per message")
    p.add_argument("pattern")
    p.add_argument("--queue")
    p.add_argument("--durable")
    p.add_argument("--start", type=syntax.start, help=syntax.start_help)
    p.add_argument("--count", type=int, help="stop after N messages")
    p.add_argument("--ack", action="store_true", help="acknowledge each message")
    common_arguments(p)
    p.set_defaults(func=guard(_sub))

    p = subparsers.add_parser("request", help="send a request and print the reply")
    p.add_argument("subject")
    p.add_argument("data")
    p.add_argument("--timeout", type=syntax.duration, default=5.0, help="5s, 500ms... (default 5s)")
    common_arguments(p)
    p.set_defaults(func=guard(_request))

    p = subparsers.add_parser("history", help="list stored events")
    p.add_argument("pattern", nargs="?", default=">")
    p.add_argument("--since", type=syntax.time, help="-1h, -2d or an RFC 3339 time")
    p.add_argument("--until", type=syntax.time, help="-1h, -2d or an RFC 3339 time")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--id", type=int, help="show the one event with this id")
    p.add_argument(
        "--cloudevent-id", default="", help="only events with this CloudEvents id (a UUID...)"
    )
    common_arguments(p)
    p.set_defaults(func=guard(_history))


def _parse_data(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _pub(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.data == "-" else args.data
    data = _parse_data(text)
    async with client_of(args) as c:
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"type": args.type, "source": args.source}
        if args.count <= 1:
            print_json({"id": str(await c.publish(args.subject, data, **kwargs))})
            return 0
        outcomes = await asyncio.gather(
            *(c.publish(args.subject, data, **kwargs) for _ in range(args.count)),
            return_exceptions=True,
        )
        seconds = time.perf_counter() - started
        ids = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        summary: dict[str, object] = {"published": len(ids), "refused": len(refused)}
        if ids:
            summary.update(first_id=str(min(ids)), last_id=str(max(ids)))
        if refused:
            summary["errors"] = _reasons(refused)
        summary.update(seconds=round(seconds, 3), frames=c.frames_sent)
        print_json(summary)
    if refused:
        first = refused[0]
        if not isinstance(first, Exception):
            raise first  # KeyboardInterrupt, cancellation: not an outcome to count
        err = from_rpc_error(first) if isinstance(first, grpc.RpcError) else first
        counts = ", ".join(f"{n} {reason}" for reason, n in _reasons(refused).items())
        raise LockgateError(
            f"{len(ids)} of {args.count} events were stored and {len(refused)} refused "
            f"({counts}); the first refusal: {getattr(err, 'message', err)}",
            reason=getattr(err, "reason", None),
            hint=getattr(err, "hint", ""),
        )
    return 0


def _reasons(errors: list[BaseException]) -> dict[str, int]:
    """How many of ``errors`` had each reason (``RATE_LIMITED``...), most frequent first."""
    counts: dict[str, int] = {}
    for err in errors:
        if isinstance(err, grpc.RpcError):
            err = from_rpc_error(err)
        reason = getattr(err, "reason", None) or type(err).__name__
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


async def _sub(args: argparse.Namespace) -> int:
    seen = 0
    async with (
        client_of(args) as c,
        c.subscribe(args.pattern, queue=args.queue, durable=args.durable, start=args.start) as sub,
    ):
        print(f"lockgate: subscribed as {sub.name}", file=sys.stderr, flush=True)
        async for msg in sub:
            print_json(event_json(msg))
            if args.ack:
                await msg.ack()
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    return 0


async def _request(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        reply = await c.request(args.subject, _parse_data(args.data), timeout=args.timeout)
        print_json(event_json(reply))
    return 0


async def _history(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        if args.id is not None:
            print_json(event_json(await c.get_event(args.id)))
            return 0
        with Progress("history") as bar:
            async for ev in c.query_events(
                args.pattern,
                since=args.since,
                until=args.until,
                page_size=min(max(args.limit, 1), 1000),
                limit=args.limit,
                cloudevent_id=args.cloudevent_id,
            ):
                print_json(event_json(ev))
                bar.advance()
    return 0
