"""``start_gateways`` (in-process, as ``lockgate serve`` will call it), the config tables and
the ``lockgate gateway`` command line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from lockgate.broker.api import LocalAPI
from lockgate.broker.config import ConfigError
from lockgate.broker.testing import run_broker
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
            ({"webhook": {}}, "needs a secret"),
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


def network_address() -> str | None:
    """This machine's non-loopback IPv4 address (a UDP connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2: routed, never reached
        except OSError:
            return None
        ip = str(s.getsockname()[0])
    return None if ipaddress.ip_address(ip).is_loopback else ip


async def test_a_network_gateway_refuses_keyless_calls_from_other_hosts() -> None:
    """`lockgate gateway http --listen 0.0.0.0` in front of a dev-mode broker: a keyless call
    from another address would be the dev admin, so the gateway refuses it (it cannot see the
    broker's keys); loopback callers keep dev mode, and a sent key goes on to the broker."""
    host = network_address()
    if host is None:
        pytest.skip("this machine has no non-loopback address to call from")
    port = free_port()
    stop = asyncio.Event()
    async with run_broker() as broker, aiohttp.ClientSession() as http:
        section = {"listen": f"0.0.0.0:{port}"}
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
            async with http.get(f"http://{host}{path}") as resp:
                body = await resp.json()
                assert (resp.status, body["reason"]) == (401, "UNAUTHENTICATED")
                assert body["detail"] == "a call from the network needs an API key"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"http://{host}:{port}/v1/ws")
            assert refused.value.status == 401
            bogus = {"Authorization": "Bearer lg_000000000000_nope"}
            async with http.get(f"http://{host}{path}", headers=bogus) as resp:
                body = await resp.json()
                assert (resp.status, body["reason"]) == (401, "UNAUTHENTICATED")
                assert body["detail"] != "a call from the network needs an API key"
        finally:
            stop.set()
            await task
