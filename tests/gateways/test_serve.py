"""`lockgate serve` runs the gateways named in its TOML file ([gateways.http] ...)."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_runs_the_configured_http_gateway(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "lockgate.toml"
    cfg.write_text(f'[gateways.http]\nlisten = "127.0.0.1:{port}"\n')
    async with run_broker(extra_args=["--config", str(cfg)]), aiohttp.ClientSession() as http:
        headers = {
            "ce-id": "1",
            "ce-source": "curl",
            "ce-type": "demo",
            "ce-specversion": "1.0",
            "content-type": "application/json",
        }
        url = f"http://127.0.0.1:{port}/v1/subjects/demo.x/events"
        async with http.post(url, data=b'{"n": 1}', headers=headers) as resp:
            assert resp.status == 200
            (event_id,) = (await resp.json())["ids"]
        async with http.get(f"http://127.0.0.1:{port}/v1/events/{event_id}") as resp:
            body = await resp.json()
            assert resp.status == 200
            assert body["event"]["data"] == {"n": 1}


async def test_serve_refuses_an_unknown_gateway(tmp_path: Path) -> None:
    cfg = tmp_path / "lockgate.toml"
    cfg.write_text('[gateways.smtp]\nlisten = "127.0.0.1:1"\n')
    with pytest.raises(RuntimeError) as exc:
        async with run_broker(extra_args=["--config", str(cfg)]):
            pass
    assert "is not a gateway" in str(exc.value)


async def test_serve_http_flag_runs_http_and_websocket_on_one_port() -> None:
    """The README's quick start: `lockgate serve --http 127.0.0.1:8080`, then curl and a
    WebSocket client on that one port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        run_broker(extra_args=["--http", f"127.0.0.1:{port}"]),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"ws://127.0.0.1:{port}/v1/ws") as ws,
    ):
        await ws.send_json({"op": "subscribe", "pattern": "quick.>", "ref": 1})
        ok = await ws.receive_json(timeout=10)
        assert ok["op"] == "ok" and ok["ref"] == 1, ok
        headers = {
            "ce-id": "q1",
            "ce-source": "/readme",
            "ce-type": "demo",
            "ce-specversion": "1.0",
            "content-type": "application/json",
        }
        async with http.post(
            f"{base}/v1/subjects/quick.start/events", data=b'{"n": 7}', headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            (event_id,) = (await resp.json())["ids"]
        frame = await ws.receive_json(timeout=10)
        assert frame["op"] == "event" and frame["id"] == event_id, frame
        assert frame["event"]["data"] == {"n": 7}


@pytest.mark.parametrize("how", ["flag", "config", "ws"])
async def test_serve_refuses_a_network_gateway_without_keys(tmp_path: Path, how: str) -> None:
    """Dev mode (no keys: keyless callers are admin) is loopback-only on every listener: a
    gateway on 0.0.0.0 is refused with the gRPC listen check's sentence (INSECURE_LISTEN)."""
    port = free_port()
    cfg = tmp_path / "lockgate.toml"
    args = ["--http", f"0.0.0.0:{port}"]
    if how != "flag":
        table = "http" if how == "config" else "ws"
        cfg.write_text(f'[gateways.{table}]\nlisten = "0.0.0.0:{port}"\n')
        args = ["--config", str(cfg)]
    with pytest.raises(RuntimeError) as exc:
        async with run_broker(data_dir=str(tmp_path / "data"), extra_args=args):
            pass
    assert f"refusing to listen on 0.0.0.0:{port} without API keys" in str(exc.value)


async def test_serve_allows_a_network_gateway_once_a_key_exists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(str(data), fsync="always")
    await store.open()
    try:
        key, _ = await create_key(store, "acme", "ops", ["admin"])
    finally:
        await store.close()
    port = free_port()
    async with (
        run_broker(
            data_dir=str(data),
            extra_args=["--http", f"0.0.0.0:{port}", "--insecure-plaintext"],
        ),
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{port}/v1/events?subject=x.y"
        async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
        async with http.get(url) as resp:
            assert resp.status == 401
