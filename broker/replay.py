"""``lockgate policy replay``: a candidate policy set against the events in the log.

Every stored event is decided under the running set and under the candidate, and the
decisions that would change are counted and listed: a dry run on real traffic. The log
keeps each batch's publisher (org, agent, roles), so the principal is the real one.

Two sources: an embedded broker's data directory (``--data-dir``, its SQLite log) and a
cluster's PostgreSQL database (``--store postgresql://…``, the rows the message logger
writes, ``broker.historydb``); the running set is the active global version of either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from lockgate.broker.ids import id_for_time_ms
from lockgate.broker.policyhook import event_attributes, json_payload
from lockgate.broker.publisher import decode_publisher
from lockgate.broker.store import Batch, PolicyVersionRecord
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import broker_pb2
from lockgate.policy import PolicySet, Principal, Request, compile_policies
from lockgate.policy.cli import ExtraCommand
from lockgate.policy.durations import RELATIVE_TIME, TimeError, parse_time_ms
from lockgate.policy.files import load_policy_dir, new_parser
from lockgate.policy.replay import diff_decisions
from lockgate.policy.subjects import is_system

__all__ = [
    "Bar",
    "add_replay_arguments",
    "replay_command",
    "requests_from_batches",
    "run_replay",
]


class Bar(Protocol):
    """A progress bar (``clients._progress.Progress``, which the broker may not import: the
    ``lockgate`` composition root hands its class in)."""

    def advance(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


BarFactory = Callable[[str, int | None], Bar]


class _NoBar:
    def advance(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def _counted(items: Iterable[Request], bar: Bar) -> Iterator[Request]:
    try:
        for item in items:
            bar.advance()
            yield item
    finally:
        bar.close()


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


async def _embedded(data_dir: str, since_ms: int) -> tuple[list[PolicyVersionRecord], list[Batch]]:
    """The global policy versions and the batches since ``since_ms`` of a data directory."""
    # Reading must never create a store: an empty one would report 0 events, silently.
    if not (Path(data_dir) / SqliteStore.FILE_NAME).is_file():
        raise _refuse(
            f"{data_dir} holds no Lockgate log",
            "give the directory `lockgate serve` uses (--data-dir)",
        )
    store = SqliteStore(data_dir, fsync="os")
    await store.open()
    try:
        versions = await store.list_policy_versions()
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
    return versions, batches


async def _cluster(dsn: str, since_ms: int) -> tuple[list[PolicyVersionRecord], list[Batch]]:
    """The global policy versions and the events since ``since_ms`` of a cluster's
    PostgreSQL database (the message logger's history), read without changing anything."""
    from lockgate.broker.historydb.reader import HistoryPosition, PgHistoryReader
    from lockgate.broker.historydb.schema import HISTORY_COMPONENT, STEPS
    from lockgate.broker.store.pg_engine import connect_pool, pg_errors, redact_dsn
    from lockgate.broker.store.postgres import PgStore

    pool = await connect_pool(dsn, min_size=1, max_size=2)  # unreachable: Unavailable, exit 1
    try:
        async with pg_errors("read the history"):
            version = None
            if await pool.fetchval("SELECT to_regclass('lockgate_schema') IS NOT NULL"):
                version = await pool.fetchval(
                    "SELECT version FROM lockgate_schema WHERE component = $1", HISTORY_COMPONENT
                )
        if version is None:
            raise _refuse(
                f"{redact_dsn(dsn)} holds no Lockgate history",
                "give the database the nodes use (--store), where the message logger writes",
            )
        if version < len(STEPS):
            raise _refuse(
                f"the history in {redact_dsn(dsn)} has an older layout (no publishers)",
                "start one node of this Lockgate version on it first (it migrates the schema)",
            )
        versions = await PgStore(pool=pool).list_policy_versions()
        reader = PgHistoryReader(pool)
        batches: list[Batch] = []
        after: HistoryPosition | None = ("", 0)
        while after is not None:
            page, after = await reader.every_batch(since_ms, after)
            batches += page
    finally:
        await pool.close()
    return versions, batches


async def run_replay(args: argparse.Namespace, progress: BarFactory | None = None) -> int:
    try:
        since_ms = parse_time_ms(args.since)
    except TimeError as exc:
        raise _refuse(f"--since {exc}", exc.hint) from None
    if args.store and args.data_dir:
        raise _refuse(
            "policy replay reads one log: give --data-dir or --store, not both",
            "--data-dir for an embedded broker, --store postgresql://… for a cluster",
        )
    if args.store and not args.store.startswith(("postgresql://", "postgres://")):
        raise _refuse(
            "--store takes a cluster's PostgreSQL database",
            "give --store postgresql://USER@HOST/DB, or --data-dir for an embedded broker",
        )
    if not args.data_dir and not args.store:
        raise _refuse(
            "policy replay reads the broker's log and needs --data-dir or --store",
            "give the directory `lockgate serve` uses (--data-dir, default ./lockgate-data), "
            "or a cluster's database (--store postgresql://…)",
        )
    parser = new_parser()
    # PolicyErrors propagate: lockgate prints each one with its caret.
    candidate = load_policy_dir(args.candidate, parser)
    current = load_policy_dir(args.current, parser) if args.current else None
    if args.store:
        versions, batches = await _cluster(args.store, since_ms)
    else:
        versions, batches = await _embedded(args.data_dir, since_ms)
    if current is None:
        active = [v for v in versions if v.active]
        current = compile_policies(active[0].files, parser) if active else PolicySet.empty()
    total = sum(b.count for b in batches if not is_system(b.subject))
    bar = (progress or (lambda _label, _total: _NoBar()))("replay", total)
    report = diff_decisions(
        current, candidate, _counted(requests_from_batches(batches), bar), args.limit
    )
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


def replay_command(progress: BarFactory | None = None) -> ExtraCommand:
    """``lockgate policy replay``, for :func:`policy.cli.main`; ``progress`` makes the bar
    shown while the events are decided (``Progress(label, total)``)."""
    return ExtraCommand(
        "decide the events in the log under a candidate policy set and print how the "
        "decisions would change",
        add_replay_arguments,
        lambda args: asyncio.run(run_replay(args, progress)),
    )


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p._negative_number_matcher = RELATIVE_TIME  # "--since -1h" is a value, as "-1" would be
    p.add_argument("candidate", help="directory of the candidate *.policy files")
    p.add_argument(
        "--since",
        default="-1h",
        help="where to start reading: -1h, -2d or an RFC 3339 time (default -1h)",
    )
    p.add_argument("--data-dir", help="an embedded broker's data directory")
    p.add_argument(
        "--store",
        help="a cluster's PostgreSQL database (postgresql://…): the message logger's history",
    )
    p.add_argument("--current", help="compare with this directory instead of the running set")
    p.add_argument("--limit", type=int, default=20, help="changed decisions to list")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
