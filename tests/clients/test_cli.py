"""The client-side CLI commands: parsing, output and one-sentence errors."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.cli import client_syntax
from lockgate.broker.testing import run_broker
from lockgate.clients import LockgateError
from lockgate.clients._cli import add_commands

ROOT = Path(__file__).resolve().parents[2]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lockgate")
    add_commands(p.add_subparsers(dest="command", required=True), client_syntax())
    return p


def test_parse_time_and_start() -> None:
    syntax = client_syntax()
    ago = dt.datetime.now(dt.UTC) - syntax.time("-1h")
    assert dt.timedelta(minutes=59) < ago < dt.timedelta(minutes=61)
    ago = dt.datetime.now(dt.UTC) - syntax.time("-1w")
    assert dt.timedelta(days=6.9) < ago < dt.timedelta(days=7.1)
    assert syntax.time("2026-01-02T03:04:05Z") == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert syntax.start("new") == "new" and syntax.start("ALL") == "all"
    assert syntax.start("after:42") == syntax.start("id:42") == ("after", 42)
    assert syntax.start("since:2026-01-02") == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="is not a time"):
        syntax.time("yesterday")
    with pytest.raises(argparse.ArgumentTypeError, match="after:<id>"):
        syntax.start("after:x")
    assert syntax.duration("500ms") == 0.5 and syntax.duration("2") == 2.0
    assert parser().parse_args(["request", "a.b", "{}", "--timeout", "1m"]).timeout == 60.0
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        syntax.duration("soon")


def test_commands_are_registered() -> None:
    p = parser()
    args = p.parse_args(["sub", "a.>", "--durable", "d", "--start", "-5m", "--count", "3", "--ack"])
    assert args.durable == "d" and args.count == 3 and args.ack
    assert isinstance(args.start, dt.datetime)
    args = p.parse_args(["dlq", "redrive", "d1", "--id", "5", "--id", "6"])
    assert args.ids == [5, 6]
    args = p.parse_args(["durables", "info", "d1", "--server", "h:1"])
    assert args.name == "d1" and args.server == "h:1"
    args = p.parse_args(["history", "--id", "9"])
    assert args.id == 9 and args.pattern == ">"


def test_unreachable_broker_prints_one_sentence_and_a_hint() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", "pub", "x.y", "1", "--server", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines[0] == "lockgate: cannot reach the broker at 127.0.0.1:1"
    assert lines[1].startswith("hint: ") and "lockgate serve" in lines[1]
    assert "Traceback" not in out.stderr


@pytest_asyncio.fixture
async def target() -> AsyncIterator[str]:
    async with run_broker() as b:
        yield b.target


@pytest.mark.e2e
async def test_pub_sub_history_durables(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = parser()

    async def run(*argv: str) -> list[object]:
        args = p.parse_args([*argv, "--server", target])
        assert await args.func(args) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    [pub] = await run("pub", "cli.a", '{"n": 1}')
    assert isinstance(pub, dict) and isinstance(pub["id"], str) and int(pub["id"]) > 0
    [summary] = await run("pub", "cli.a", "hello", "--count", "5")
    assert isinstance(summary, dict) and summary["published"] == 5
    lines = await run("sub", "cli.>", "--start", "all", "--count", "6", "--durable", "c1", "--ack")
    assert [m["data"] for m in lines] == [{"n": 1}] + ["hello"] * 5  # type: ignore[index]
    history = await run("history", "cli.>", "--since", "-1h", "--limit", "3")
    assert len(history) == 3
    [one] = await run("history", "--id", str(pub["id"]))
    assert one == {**one, "id": pub["id"], "data": {"n": 1}}  # type: ignore[dict-item]
    [durable] = await run("durables", "list")
    assert durable["name"] == "c1"  # type: ignore[index]
    [info] = await run("durables", "info", "c1")
    assert info["durable"]["name"] == "c1" and info["pending"] == []  # type: ignore[index]
    assert isinstance(info["durable"]["ack_floor"], str)  # type: ignore[index]
    await run("durables", "delete", "c1")
    assert await run("dlq", "list") == []

    args = p.parse_args(["history", "--id", "1", "--server", target])
    with pytest.raises(LockgateError) as refused:  # `lockgate` prints it (broker/cli_errors.py)
        await args.func(args)
    assert refused.value.reason == "NOT_FOUND"
