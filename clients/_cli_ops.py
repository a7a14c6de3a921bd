"""``lockgate status | top | dlq | durables``: watching a node and tending its durables.

Example::

    lockgate top
    lockgate dlq redrive billing --id 7 --id 9
    lockgate durables info billing
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lockgate.clients._cli_kit import client_of, common_arguments, guard, print_json, record_json
from lockgate.clients._progress import Progress

__all__ = ["add_ops_commands"]

_REDRIVE_CHUNK = 500
"""Dead-letter ids per RedriveDeadLetters call when many are named (the bar moves per call)."""


def add_ops_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register dlq, durables, status and top on ``lockgate``'s subparsers."""
    p = subparsers.add_parser("dlq", help="list and redrive dead letters")
    dlq = p.add_subparsers(dest="dlq_cmd", required=True)
    q = dlq.add_parser("list", help="list dead letters")
    q.add_argument("--durable")
    common_arguments(q)
    q = dlq.add_parser("redrive", help="give dead letters back to their durable")
    q.add_argument("durable")
    q.add_argument("--id", type=int, action="append", dest="ids", help="repeatable")
    common_arguments(q)
    p.set_defaults(func=guard(_dlq))

    p = subparsers.add_parser("durables", help="list, inspect and delete durables")
    ds = p.add_subparsers(dest="durables_cmd", required=True)
    common_arguments(ds.add_parser("list", help="list durables"))
    for name, text in (("info", "describe a durable"), ("delete", "delete a durable")):
        q = ds.add_parser(name, help=text)
        q.add_argument("name")
        common_arguments(q)
    p.set_defaults(func=guard(_durables))

    p = subparsers.add_parser(
        "status", help="the node's status: id, store, history lag, event counts, durables"
    )
    common_arguments(p)
    p.set_defaults(func=guard(_status))

    p = subparsers.add_parser(
        "top", help="a live view of the node: rates, subscribers, durables' lag, dead letters"
    )
    p.add_argument("--once", action="store_true", help="print one view (rates over --interval)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between views (1)")
    p.add_argument("--count", type=int, default=0, help="stop after N views (default: Ctrl-C)")
    common_arguments(p)
    p.set_defaults(func=guard(_top))


async def _status(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        s = await c.admin.status()
        print_json(
            {
                "node": s.node_id,
                "store": s.store,
                "history_lag": s.history_lag,
                "published": s.published,
                "delivered": s.delivered,
                "rejected": s.rejected,
                "subscriptions": s.subscriptions,
                "durables": [dataclasses.asdict(d) for d in s.durables],
                "nodes": [dataclasses.asdict(n) for n in s.nodes],
            }
        )
    return 0


async def _top(args: argparse.Namespace) -> int:
    from lockgate.clients._top import run_top

    if args.interval <= 0 or args.count < 0:
        raise argparse.ArgumentTypeError("--interval must be above 0 and --count at least 0")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    async with client_of(args) as c:
        await run_top(
            c.admin.status,
            write,
            tty=sys.stdout.isatty(),
            interval=args.interval,
            count=args.count,
            once=args.once,
        )
    return 0


async def _dlq(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        if args.dlq_cmd == "list":
            for letter in await c.admin.list_dead_letters(args.durable):
                print_json(record_json(letter))
        elif not args.ids:  # all of them: the broker redrives them in one call
            print_json({"redriven": await c.admin.redrive(args.durable)})
        else:
            count = 0
            ids = list(dict.fromkeys(args.ids))
            with Progress("redrive", len(ids)) as bar:
                for start in range(0, len(ids), _REDRIVE_CHUNK):
                    chunk = ids[start : start + _REDRIVE_CHUNK]
                    count += await c.admin.redrive(args.durable, chunk)
                    bar.advance(len(chunk))
            print_json({"redriven": count})
    return 0


async def _durables(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        if args.durables_cmd == "list":
            for info in await c.admin.list_durables():
                print_json(record_json(info))
        elif args.durables_cmd == "info":
            print_json(record_json(await c.admin.get_durable(args.name)))
        else:
            await c.admin.delete_durable(args.name)
            print_json({"deleted": args.name})
    return 0
