"""``lockgate top`` and the figures of ``lockgate status`` (AdminService.GetStatus) on a real
broker: event counts and rates move with traffic, a durable's pending count and dead letters
show, an org-admin sees its own org only, the output has no escape codes when it is not a
terminal and redraws in place on one (a pty)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2_grpc
from lockgate.clients import Client
from lockgate.clients._admin import ClusterNode, DurableStatus, NodeStatus
from lockgate.clients._top import render
from tests.broker.e2e_kit import auth, event, publish_batches, run_cli, subscribe, unique
from tests.broker.test_policy_in_broker import keys_create
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
LOCKGATE = [sys.executable, "-m", "lockgate.broker.cli"]


def _views(out: str) -> list[list[str]]:
    """The views of a non-terminal ``top``: blocks of lines after each ``--``."""
    views: list[list[str]] = []
    for line in out.splitlines():
        if line == "--":
            views.append([])
        elif views:
            views[-1].append(line)
    return views


def _figure(view: list[str], row: str, name: str) -> str:
    """The word after ``name`` on the line that starts with ``row``."""
    words = next(line for line in view if line.startswith(row)).split()
    return words[words.index(name) + 1]


def test_the_view_of_two_statuses() -> None:
    d = DurableStatus("acme", "billing", 3, 1, 7, 1, 1000, True)
    before = NodeStatus("n1", "sqlite", None, 100, 200, 0, 2, (), time=1000.0)
    after = NodeStatus("n1", "sqlite", None, 150, 300, 5, 2, (d,), time=1002.0)
    view = render(after, before)
    assert _figure(view, "events/s", "published") == "25.0"
    assert _figure(view, "events/s", "delivered") == "50.0"
    assert _figure(view, "events/s", "rejected") == "2.5"
    assert view[-1].split() == ["acme/billing", "3", "1", "7", "1", "1000+"]
    first = render(before, None)
    assert _figure(first, "events/s", "published") == "-"
    assert first[-1] == "(no active durables)"
    assert not any(line.startswith("nodes") for line in view)  # an org-admin's: none


def test_the_view_counts_the_clusters_nodes_and_names_the_first_ones() -> None:
    nodes = tuple(ClusterNode(f"n{i}", 1000.0) for i in range(10))
    view = render(NodeStatus("n0", "cluster", 0, nodes=nodes, time=1000.0), None)
    line = next(line for line in view if line.startswith("nodes"))
    assert line == "nodes 10  n0, n1, n2, n3, n4, n5, n6, n7, ... 2 more"


async def test_top_and_status_follow_the_traffic(tmp_path: Path) -> None:
    admin = await keys_create(str(tmp_path), "default", "ops", "admin")
    lead = await keys_create(str(tmp_path), "acme", "lead", "org-admin")
    env = {**os.environ, "LOCKGATE_API_KEY": admin}
    async with (
        run_broker(data_dir=str(tmp_path)) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        subject = unique("top")
        name = unique("d").replace(".", "-")
        # Never acked: one delivery each, then dead letters.
        doomed = await subscribe(
            stub,
            auth(lead),
            pattern=subject,
            durable=name,
            ack_wait=duration_pb2.Duration(nanos=100_000_000),
            max_deliveries=1,
        )
        top = await asyncio.create_subprocess_exec(
            *LOCKGATE,
            *("top", "--server", b.target, "--interval", "0.3", "--count", "40"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        stop = asyncio.Event()

        async def traffic() -> None:
            n = 0
            while not stop.is_set():
                await publish_batches(stub, subject, [[event(str(n))]], auth(lead))
                n += 1
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(traffic())
        try:
            out, err = await asyncio.wait_for(top.communicate(), 120)
        finally:
            stop.set()
            await sender
            await doomed.close()
        assert top.returncode == 0, err.decode()
        text = out.decode()
        assert "\x1b" not in text  # plain lines when stdout is not a terminal
        views = _views(text)
        assert len(views) == 40
        published = [int(_figure(v, "events ", "published")) for v in views]
        assert published[-1] > published[0]
        assert any(float(_figure(v, "events/s", "published")) > 0 for v in views[1:])
        rows = [line.split() for v in views for line in v if line.startswith(f"acme/{name}")]
        assert rows, views[-1]
        assert any(int(row[-1]) > 0 for row in rows)  # dead letters counted

        # The org-admin's status: its org's durables only; the admin's: every org's.
        mine = unique("m").replace(".", "-")
        own = await subscribe(stub, auth(admin), pattern=unique("own"), durable=mine)
        async with Client(b.target, api_key=lead) as c:
            status = await c.admin.status()
            assert {(d.org, d.name) for d in status.durables} <= {("acme", name)}
            assert status.published >= published[-1]
        async with Client(b.target, api_key=admin) as c:
            everyone = await eventually(lambda: _with_durable(c, ("default", mine)), timeout=20)
            assert everyone.published >= status.published
        await own.close()


async def _with_durable(c: Client, key: tuple[str, str]) -> NodeStatus | None:
    status = await c.admin.status()
    return status if key in {(d.org, d.name) for d in status.durables} else None


async def test_top_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    async with run_broker(data_dir=str(tmp_path)) as b:
        top = ["top", "--server", b.target, "--interval", "0.2", "--count", "2"]
        code, text, err = await asyncio.to_thread(run_cli, top, tty="stdout")
        assert code == 0, err
        assert text.count("\x1b[H\x1b[2J") == 2
        assert text.count("lockgate top  node") == 2
        assert "--\n" not in text.replace("\r\n", "\n")


@pytest.mark.parametrize("flags", [["--interval", "0"], ["--count", "-1"]])
def test_bad_top_flags_are_refused_in_one_sentence(flags: list[str]) -> None:
    out = subprocess.run(
        [*LOCKGATE, "top", "--server", "127.0.0.1:9", *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode != 0
    assert out.stderr.startswith("lockgate: --interval must be above 0"), out.stderr
    assert "Traceback" not in out.stderr
