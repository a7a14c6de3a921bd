"""History by CloudEvents id ("by UUID", as seed systems query): QueryEvents'
``cloudevent_id`` over gRPC (the client), HTTP (``?cloudevent_id=``) and ``lockgate history
--cloudevent-id``, on the embedded log; the pattern and time range still apply."""

from __future__ import annotations

import argparse
import json
import socket

import aiohttp
import pytest

from lockgate.broker.cli import client_syntax
from lockgate.broker.testing import run_broker
from lockgate.clients import Client
from lockgate.clients._cli import add_commands

pytestmark = pytest.mark.e2e

UUID = "7f1c2f7e-3b9a-4c1e-9a57-0d9a4b2e8c11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_by_cloudevents_id_over_grpc_http_and_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    async with run_broker(extra_args=["--http", f"127.0.0.1:{port}"]) as b:
        async with Client(b.target) as c:
            ids = [
                await c.publish("orders.eu", {"n": 1}, id=UUID, source="/shop"),
                await c.publish("orders.eu", {"n": 2}, id="other", source="/shop"),
                await c.publish("billing.eu", {"n": 3}, id=UUID, source="/billing"),
                await c.publish("orders.us", {"n": 4}, id=UUID, source="/crm"),
            ]
            found = [e.id async for e in c.query_events(">", cloudevent_id=UUID)]
            assert found == [ids[0], ids[2], ids[3]]
            found = [e.id async for e in c.query_events("orders.*", cloudevent_id=UUID)]
            assert found == [ids[0], ids[3]]
            one = [e.id async for e in c.query_events(">", cloudevent_id=UUID, page_size=1)]
            assert one == [ids[0], ids[2], ids[3]]  # a page at a time, with a cursor
            assert [e.id async for e in c.query_events(">", cloudevent_id="nobody")] == []

        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/v1/events"
            async with http.get(url, params={"cloudevent_id": UUID, "subject": "*.eu"}) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            assert [e["id"] for e in body["events"]] == [str(ids[0]), str(ids[2])]
            assert body["next"] is None

        p = argparse.ArgumentParser(prog="lockgate")
        add_commands(p.add_subparsers(dest="command", required=True), client_syntax())
        args = p.parse_args(["history", "--cloudevent-id", UUID, "--server", b.target])
        assert await args.func(args) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["id"] for line in lines] == [str(i) for i in (ids[0], ids[2], ids[3])]
        assert {line["source"] for line in lines} == {"/shop", "/billing", "/crm"}
