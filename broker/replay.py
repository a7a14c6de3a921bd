"""``lockgate policy replay``: a candidate policy set against the events in the log.

Every stored event is decided under the running set and under the candidate, and the
decisions that would change are counted and listed: a dry run on real traffic. The log
keeps each batch's publisher (org, agent, roles), so the principal is the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.policyhook import event_attributes, json_payload
from lockgate.broker.publisher import decode_publisher
from lockgate.broker.store import Batch
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2
from lockgate.policy import PolicySet, Principal, Request, compile_policies
from lockgate.policy.cli import ExtraCommand
from lockgate.policy.durations import RELATIVE_TIME, TimeError, parse_time_ms
from lockgate.policy.files import load_policy_dir, new_parser
from lockgate.policy.replay import diff_decisions
from lockgate.policy.subjects import is_system

__all__ = ["add_replay_arguments", "replay_command", "requests_from_batches", "run_replay"]


def requests_from_batches(batches: list[Batch]) -> Iterator[Request]:
    """The publish requests that admitted the events of ``batches``."""
    for b in batches:
        agent, roles = decode_publisher(b.publisher)
        who = Principal(b.org, agent, roles)
        for d in broker_pb2.SubscribeResponse.FromString(b.body).deliveries:
            if is_system(d.subject):
                continue
            yield Request(
                "publish",
                d.subject,
                who,
                event_attributes(d.event),
                data_bytes=json_payload(d.event),
            )


def _refuse(message: str, hint: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{message}; {hint}")


async def run_replay(args: argparse.Namespace) -> int:
    try:
        since_ms = parse_time_ms(args.since)
    except TimeError as exc:
        raise _refuse(f"--since {exc}", exc.hint) from None
    if not args.data_dir:
        raise _refuse(
            "policy replay reads the broker's log and needs --data-dir",
            "give the directory `lockgate serve` uses (--data-dir, default ./lockgate-data)",
        )
    # Reading must never create a store: an empty one would report 0 events, silently.
    if not (Path(args.data_dir) / SqliteStore.FILE_NAME).is_file():
        raise _refuse(
            f"{args.data_dir} holds no Lockgate log",
            "give the directory `lockgate serve` uses (--data-dir)",
        )
    parser = new_parser()
    # PolicyErrors propagate: lockgate prints each one with its caret.
    candidate = load_policy_dir(args.candidate, parser)
    current = load_policy_dir(args.current, parser) if args.current else None
    store = SqliteStore(args.data_dir, fsync="os")
    await store.open()
    try:
        if current is None:
            active = [v for v in await store.list_policy_versions() if v.active]
            current = compile_policies(active[0].files, parser) if active else PolicySet.empty()
        batches: list[Batch] = []
        after = id_for_time_ms(since_ms) - 1
        while True:
            page = await store.recent_batches(after)
            if not page:
                break
            batches.extend(page)
            after = page[-1].first_id
            if len(page) < 10_000:
                break
    finally:
        await store.close()
    report = diff_decisions(current, candidate, requests_from_batches(batches), args.limit)
    if args.json:
        print(
            json.dumps(
                {
                    "current": current.version,
                    "candidate": candidate.version,
                    "total": report.total,
                    "changed": report.changed,
                    "newly_denied": report.newly_denied,
                    "newly_allowed": report.newly_allowed,
                }
            )
        )
        return 0
    print(
        f"replayed {report.total} events since {args.since}: "
        f"running set {current.version} -> candidate {candidate.version}"
    )
    print(report.summary())
    for ch in report.changes:
        r = ch.request
        old = f"{'allow' if ch.old.allowed else 'deny'} ({ch.old.rule or ch.old.effect})"
        new = f"{'allow' if ch.new.allowed else 'deny'} ({ch.new.rule or ch.new.effect})"
        print(
            f"  {r.subject} type={(r.event or {}).get('type')} by {r.principal.org}/"
            f"{r.principal.agent}: {old} -> {new}: {ch.new.reason}"
        )
    return 0


def replay_command() -> ExtraCommand:
    """``lockgate policy replay``, for :func:`policy.cli.main`."""
    return ExtraCommand(
        "decide the events in the log under a candidate policy set and print how the "
        "decisions would change",
        add_replay_arguments,
        lambda args: asyncio.run(run_replay(args)),
    )


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p._negative_number_matcher = RELATIVE_TIME  # "--since -1h" is a value, as "-1" would be
    p.add_argument("candidate", help="directory of the candidate *.policy files")
    p.add_argument(
        "--since",
        default="-1h",
        help="where to start reading: -1h, -2d or an RFC 3339 time (default -1h)",
    )
    p.add_argument("--data-dir", help="the broker's data directory (required)")
    p.add_argument("--current", help="compare with this directory instead of the running set")
    p.add_argument("--limit", type=int, default=20, help="changed decisions to list")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
