"""``start_gateways`` (in-process, as ``lockgate serve`` will call it), the config tables and
the ``lockgate gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest

from lockgate.broker.api import LocalAPI
from lockgate.broker.config import ConfigError
from lockgate.broker.testing import run_broker
from lockgate.gateways._site import network_call_without_key, start_site
from lockgate.gateways.cli import add_commands, run_gateway
from lockgate.gateways.config import settings_for
from lockgate.gateways.embedded import start_gateways
from tests.gateways.gw_kit import local_broker, unique
from tests.support import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_start_gateways_serves_http_ws_and_webhooks(tmp_path: Path) -> None:
    async with local_broker(tmp_path) as env:
        port = free_port()
        stop = await start_gateways(
            LocalAPI(env.broker, env.auth),
            {
                "http": {"listen": f"127.0.0.1:{port}", "max_body_bytes": 2048},
                "ws": {"heartbeat": "5s"},
                "webhook": {"secret": "x", "backoff": ["100ms"]},
            },
        )
        try:
            url = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as http:
                r = await http.post(
                    f"{url}/v1/subjects/{unique('emb.')}/events",
                    data=b"x" * 4096,
                    headers={"Content-Type": "application/cloudevents+json"},
                )
                assert r.status == 413
                async with http.ws_connect(f"{url}/v1/ws") as ws:
                    await ws.send_json({"op": "publish", "subject": "emb.x", "data": 1})
                    assert (await ws.receive_json(timeout=3))["op"] == "ok"
        finally:
            await stop()


async def test_http_alone_serves_the_websocket_too(tmp_path: Path) -> None:
    """As the standalone HTTP gateway does, and as the README's websocat line assumes; an
    empty bearer token (`Bearer $KEY` with KEY unset) counts as no key in dev mode."""
    async with local_broker(tmp_path) as env:
        port = free_port()
        stop = await start_gateways(
            LocalAPI(env.broker, env.auth), {"http": {"listen": f"127.0.0.1:{port}"}}
        )
        try:
            url = f"ws://127.0.0.1:{port}/v1/ws"
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(url, headers={"Authorization": "Bearer "}) as ws,
            ):
                await ws.send_json({"op": "publish", "subject": unique("emb."), "data": 1})
                assert (await ws.receive_json(timeout=3))["op"] == "ok"
        finally:
            await stop()


async def test_bad_config_fails_clearly(tmp_path: Path) -> None:
    async with local_broker(tmp_path) as env:
        cases = [
            ({"smtp": {}}, "not a gateway"),
            ({"http": {"listen": "127.0.0.1:0", "max_body": 1}}, "no setting 'max_body'"),
            ({"webhook": {"secrett": "x"}}, "no setting 'secrett'"),
            ({"ws": {"heartbeat": "soon"}, "http": {}}, "a duration"),
        ]
        for section, text in cases:
            with pytest.raises(ConfigError) as info:
                await start_gateways(LocalAPI(env.broker, env.auth), section)
            assert text in info.value.message and info.value.hint


def test_settings_from_tables() -> None:
    nats = settings_for(
        "nats",
        {"subjects": {"a.>": "b"}, "jetstream": [{"stream": "S", "subject": "x.>"}], "batch": 9},
    )
    assert nats.subjects == {"a.>": "b"} and nats.jetstream[0].durable == "lockgate"
    hook = settings_for("webhook", {"secret": "s", "backoff": ["1s", "2s"], "timeout": "3s"})
    assert hook.backoff == (1.0, 2.0) and hook.timeout == 3.0
    with pytest.raises(ConfigError):
        settings_for("redis", {"batch": "many"})


def test_cli_parses_each_kind(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="lockgate")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["gateway", "redis", "--broker", "h:1", "--stream", "s=t.u", "--list", "l=v"]
    )
    from lockgate.gateways.cli import _section

    assert _section(args)["streams"] == {"s": "t.u"} and args.broker == "h:1"
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[gateways.http]\nlisten = "127.0.0.1:9"\nmax_body_bytes = 5\n')
    args = parser.parse_args(["gateway", "http", "--config", str(cfg), "--listen", "0.0.0.0:1"])
    assert _section(args) == {"listen": "0.0.0.0:1", "max_body_bytes": 5}
    for kind in ("ws", "nats", "webhook"):
        assert parser.parse_args(["gateway", kind]).kind == kind
    json.dumps(vars(args), default=str)


@pytest.mark.parametrize(
    ("remote", "headers", "query", "refused"),
    [
        ("192.0.2.7", {}, {}, True),  # another host, no key: would be the dev admin
        ("2001:db8::7", {}, {}, True),
        ("192.0.2.7", {"Authorization": "Bearer lg_a_b"}, {}, False),  # the broker checks it
        ("192.0.2.7", {"x-api-key": "lg_a_b"}, {}, False),
        ("192.0.2.7", {}, {"api_key": "lg_a_b"}, False),  # browsers' WebSocket
        ("127.0.0.1", {}, {}, False),  # loopback keeps the dev mode
        ("::1", {}, {}, False),
        ("::ffff:127.0.0.1", {}, {}, False),
        (None, {}, {}, True),  # an unknown peer is not trusted
    ],
)
def test_which_calls_a_network_listener_refuses(
    remote: str | None, headers: dict[str, str], query: dict[str, str], refused: bool
) -> None:
    """The rule a gateway on a non-loopback listener applies before anything else. Tested as a
    function: this workplace sends no test traffic to non-loopback addresses."""
    assert network_call_without_key(remote, headers, query) is refused


async def test_a_network_gateway_installs_the_rule_and_serves_loopback() -> None:
    """`lockgate gateway http --listen 0.0.0.0` in front of a dev-mode broker starts, and
    loopback callers keep the dev mode."""
    port = free_port()
    stop = asyncio.Event()
    async with run_broker() as broker, aiohttp.ClientSession() as http:
        section = {"listen": f"0.0.0.0:{port}", "insecure_plaintext": True}
        task = asyncio.create_task(run_gateway("http", broker.target, section, stop=stop))
        try:
            path = f":{port}/v1/events?subject={unique('net.')}"

            async def loopback_ok() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1{path}") as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(loopback_ok, what="the gateway serves loopback callers")
        finally:
            stop.set()
            await task


@pytest.mark.parametrize(("listen", "guarded"), [("0.0.0.0:0", True), ("127.0.0.1:0", False)])
async def test_only_a_network_listener_gets_the_keyless_rule(listen: str, guarded: bool) -> None:
    app = aiohttp.web.Application()
    runner, _ = await start_site(app, listen)
    try:
        names = [getattr(m, "__name__", "") for m in app.middlewares]
        assert ("_network_needs_key" in names) is guarded
    finally:
        await runner.cleanup()
