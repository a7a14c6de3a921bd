"""``lockgate audit``: the audit log, as lines or as JSON lines (the export format).

Example::

    lockgate audit --since 1h --action policy --json
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from lockgate.clients._admin import AuditRecord
from lockgate.clients._cli_kit import TextSyntax, client_of, common_arguments, guard, print_json

__all__ = ["add_audit_command", "audit_json"]


def add_audit_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], syntax: TextSyntax
) -> None:
    """Register audit on ``lockgate``'s subparsers."""
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
