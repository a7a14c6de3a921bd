"""The client-side ``lockgate`` commands: pub, sub, request, history, dlq, durables, status, top,
audit.

``broker/cli.py`` calls :func:`add_commands` with its subparsers; every handler is ``async`` and
returns an exit code. Failures raise ``LockgateError`` (gRPC errors are translated here), which
``lockgate`` prints as one sentence and a ``hint:`` line, never a traceback. Ids are JSON
strings in every output: 64-bit ids lose precision as JSON numbers in JavaScript.

Example::

    lockgate pub orders.created '{"order": 7}'
    lockgate sub 'orders.>' --durable billing --ack --count 10
    lockgate history 'orders.>' --since -1h --limit 20
    lockgate audit --since 1h --action policy --json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc

from lockgate.clients._admin import AuditRecord
from lockgate.clients._cli_kit import (
    Handler,
    client_of,
    common_arguments,
    event_json,
    guard,
    print_json,
    record_json,
)
from lockgate.clients._codec import StartSpec
from lockgate.clients._errors import LockgateError, from_rpc_error
from lockgate.clients._progress import Progress

__all__ = ["POLICY_COMMANDS", "TextSyntax", "add_commands"]

_REDRIVE_CHUNK = 500
"""Dead-letter ids per RedriveDeadLetters call when many are named (the bar moves per call)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TextSyntax:
    """How the commands read times (``--since -1h``) and start positions (``--start all``).

    The one syntax lives in the server's packages (``policy.durations``,
    ``broker.positions``), which this package may not import; ``lockgate``, the composition
    root, hands it in. Each function raises ``argparse.ArgumentTypeError`` on bad text.
    """

    time: Callable[[str], dt.datetime]
    start: Callable[[str], StartSpec]
    duration: Callable[[str], float] = float
    start_help: str = "where to start"


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], syntax: TextSyntax
) -> None:
    """Register pub, sub, request, history, dlq and durables on ``lockgate``'s subparsers."""
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

    p = subparsers.add_parser("audit", help="read the audit log (admin role)")
    since_help = "1h (that long ago), -1h, or a time (RFC 3339, date)"
    p.add_argument("--since", type=_ago(syntax), help=since_help)
    p.add_argument("--until", type=_ago(syntax), help=since_help)
    p.add_argument("--org", help="only this org's records (default: every org you may read)")
    p.add_argument("--agent")
    p.add_argument("--action", help="an action and those below it: policy, policy.put, auth...")
    p.add_argument("--outcome", choices=("ok", "denied", "failed"))
    p.add_argument("--limit", type=int, help="stop after N records")
    p.add_argument("--json", action="store_true", help="JSON lines (the export format)")
    common_arguments(p)
    p.set_defaults(func=guard(_audit))


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


def _ago(syntax: TextSyntax) -> Callable[[str], dt.datetime]:
    """A time in the one syntax, or a bare duration meaning that long ago (``1h``)."""

    def parse(text: str) -> dt.datetime:
        try:
            return syntax.time(text)
        except argparse.ArgumentTypeError:
            try:
                seconds = syntax.duration(text)
            except (argparse.ArgumentTypeError, ValueError):
                raise argparse.ArgumentTypeError(
                    f"{text!r} is neither a time nor a duration; write 1h, -1h or a time"
                ) from None
            return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)

    return parse


def audit_json(r: AuditRecord) -> dict[str, Any]:
    """One audit record, as the HTTP gateway's ``GET /v1/audit`` shows it."""
    return {
        "id": str(r.id),
        "time": r.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "org": r.org,
        "agent": r.agent,
        "credential": r.credential,
        "action": r.action,
        "target": r.target,
        "outcome": r.outcome,
        "surface": r.surface,
        "peer": r.peer,
        "count": r.count,
        "detail": dict(r.detail),
    }


def _audit_line(r: AuditRecord) -> str:
    who = f"{r.org}/{r.agent}" if r.org or r.agent else "-"
    if r.credential:
        who += f" ({r.credential})"
    where = f"{r.surface} {r.peer}".strip()
    extra = " ".join(f"{k}={v}" for k, v in sorted(r.detail.items()))
    times = f" x{r.count}" if r.count != 1 else ""
    when = r.time.isoformat(timespec="seconds").replace("+00:00", "Z")
    return f"{when} {r.outcome:<6} {r.action} {r.target or '-'}{times} by {who} via {where} {extra}"


async def _audit(args: argparse.Namespace) -> int:
    seen = 0
    async with client_of(args) as c:
        async for r in c.admin.audit(
            since=args.since,
            until=args.until,
            org=args.org,
            agent=args.agent,
            action=args.action,
            outcome=args.outcome,
        ):
            if args.json:
                print_json(audit_json(r))
            else:
                print(_audit_line(r).rstrip(), flush=True)
            seen += 1
            if args.limit is not None and seen >= args.limit:
                break
    return 0


# -- lockgate policy push | versions | rollback ------------------------------------------------
# ``lockgate policy`` belongs to the pure policy package; these three talk to a broker, so
# ``lockgate`` (the composition root) registers them there, and reads the directory for push
# with the one policy-file reader (``args.files``).


def _policy_org(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--org",
        default="",
        help="the org whose own set to act on (its org-admin may); default: the global set "
        "(the broker's admin)",
    )
    common_arguments(p)


def _push_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="directory of *.policy files: the whole set")
    p.add_argument("--validate-only", action="store_true", help="check only, do not run it")
    _policy_org(p)


def _rollback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", nargs="?", default="", help="default: the one before the running")
    _policy_org(p)


async def _push(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        update = await c.admin.put_policies(
            args.files, validate_only=args.validate_only, org=args.org
        )
    for problem in update.problems:
        print(f"{problem.file}:{problem.line}:{problem.column}: {problem.message}", file=sys.stderr)
    print_json({"version": update.version, "applied": update.applied, "org": args.org})
    return 0


async def _versions(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        for v in await c.admin.list_policy_versions(org=args.org):
            print_json(record_json(v))
    return 0


async def _rollback(args: argparse.Namespace) -> int:
    async with client_of(args) as c:
        print_json(record_json(await c.admin.rollback_policies(args.version or None, org=args.org)))
    return 0


#: ``lockgate policy`` subcommands that talk to a broker: name -> (help, arguments, handler).
POLICY_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "push": (
        "check a directory's set on the broker and run it (PutPolicies)",
        _push_arguments,
        guard(_push),
    ),
    "versions": (
        "list the versions of a policy set (ListPolicyVersions)",
        _policy_org,
        guard(_versions),
    ),
    "rollback": (
        "run an earlier version of a policy set again (RollbackPolicies)",
        _rollback_arguments,
        guard(_rollback),
    ),
}
