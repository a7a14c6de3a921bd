"""TLS on the gateway listeners (HTTP, WebSocket), in ``lockgate serve`` and standalone, and the
refusal of plain text on the network. Certificates are made by the test."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest

from lockgate.broker.auth import create_key
from lockgate.broker.errors import BrokerError, Reason
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.clients import TLS
from lockgate.gateways.cli import run_gateway
from tests.support import eventually
from tests.support.certs import CertAuthority, PemFiles, replace_files, served_certificate

pytestmark = pytest.mark.e2e

_CE = {"ce-id": "1", "ce-source": "t", "ce-type": "t", "ce-specversion": "1.0"}
_WHO = """
policy who on "who.>" {
  allow publish
  allow subscribe
  tag "agent" = principal.agent
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _data_dir_with_key(path: Path, org: str = "acme") -> str:
    store = SqliteStore(str(path), fsync="always")
    await store.open()
    try:
        key, _ = await create_key(store, org, "ops", ["admin"])
    finally:
        await store.close()
    return key


class _Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = CertAuthority.create()
        self.ca_file = self.ca.write(directory / "ca.pem")
        self.server = self.ca.server().write(directory, "server")

    def client_context(self, client: PemFiles | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx

    def serve_args(self, *, mutual: bool = False) -> list[str]:
        args = [
            "--tls-server-cert",
            str(self.server.cert),
            "--tls-server-key",
            str(self.server.key),
        ]
        return [*args, "--tls-client-ca", str(self.ca_file)] if mutual else args


async def test_the_http_gateway_over_tls_in_serve(tmp_path: Path) -> None:
    pki = _Pki(tmp_path)
    port = free_port()
    args = [*pki.serve_args(), "--http", f"127.0.0.1:{port}"]
    async with run_broker(extra_args=args), aiohttp.ClientSession() as http:
        url = f"https://127.0.0.1:{port}/v1/subjects/tls.http/events"
        ctx = pki.client_context()
        async with http.post(url, json={"n": 1}, headers=_CE, ssl=ctx) as resp:
            assert resp.status == 200, await resp.text()
            (event_id,) = (await resp.json())["ids"]
        async with http.get(f"https://127.0.0.1:{port}/v1/events/{event_id}", ssl=ctx) as resp:
            assert (await resp.json())["event"]["data"] == {"n": 1}
        # The WebSocket endpoint on the same listener is wss://.
        async with http.ws_connect(f"wss://127.0.0.1:{port}/v1/ws", ssl=ctx) as ws:
            await ws.send_json({"op": "subscribe", "name": "s", "pattern": "tls.>"})
            ack = await ws.receive_json(timeout=10)
            assert ack.get("op") != "error", ack
        # Plain HTTP to the TLS port gets no answer as HTTP.
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{port}/v1/events/{event_id}") as resp:
                await resp.read()


async def test_mtls_on_the_http_gateway_names_the_caller(tmp_path: Path) -> None:
    pki = _Pki(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "who.policy").write_text(_WHO)
    data = tmp_path / "data"
    await _data_dir_with_key(data)  # not the dev mode: a caller is its certificate or key
    bot = pki.ca.issue("bot", uris=["lockgate://acme/bot"]).write(tmp_path, "bot")
    nosan = pki.ca.issue("nosan").write(tmp_path, "nosan")
    rogue = CertAuthority.create("rogue").issue("m", uris=["lockgate://acme/bot"])
    rogue_files = rogue.write(tmp_path, "rogue")
    port = free_port()
    args = [
        *pki.serve_args(mutual=True),
        "--policy-dir",
        str(policies),
        "--http",
        f"127.0.0.1:{port}",
    ]
    async with run_broker(str(data), args), aiohttp.ClientSession() as http:
        base = f"https://127.0.0.1:{port}"
        ctx = pki.client_context(bot)
        async with http.post(
            f"{base}/v1/subjects/who.x/events", json={}, headers=_CE, ssl=ctx
        ) as r:
            assert r.status == 200, await r.text()
            (event_id,) = (await r.json())["ids"]
        async with http.get(f"{base}/v1/events/{event_id}", ssl=ctx) as r:
            assert (await r.json())["event"]["agent"] == "bot"
        # The WebSocket on the same listener: the certificate's caller subscribes and publishes.
        async with http.ws_connect(f"wss://127.0.0.1:{port}/v1/ws", ssl=ctx) as ws:
            await ws.send_json({"op": "subscribe", "pattern": "who.>", "ref": 1})
            assert (await ws.receive_json(timeout=10))["op"] == "ok"
            await ws.send_json({"op": "publish", "subject": "who.ws", "data": {}, "ref": 2})
            frames = [await ws.receive_json(timeout=10) for _ in range(2)]
            (delivered,) = [f for f in frames if f["op"] == "event"]
            assert delivered["event"]["agent"] == "bot"
        # ...and a certificate that names nobody is refused at the upgrade.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(
                f"wss://127.0.0.1:{port}/v1/ws", ssl=pki.client_context(nosan)
            ):
                pass
        assert refused.value.status == 401
        # A certificate with no SAN is verified but names nobody: 401 with the reason.
        async with http.get(f"{base}/v1/events/{event_id}", ssl=pki.client_context(nosan)) as r:
            assert r.status == 401
            body = await r.json()
            assert "no URI SAN" in body["detail"] and body["reason"] == "UNAUTHENTICATED"
        # No certificate, or one of another CA: the handshake itself is refused.
        for ctx in (pki.client_context(), pki.client_context(rogue_files)):
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"{base}/v1/events/{event_id}", ssl=ctx) as r:
                    await r.read()


async def test_serve_refuses_plaintext_on_the_network(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _data_dir_with_key(data)
    port = free_port()
    for args, where in (
        (["--listen", "0.0.0.0:0"], "0.0.0.0:0"),
        (["--http", f"0.0.0.0:{port}"], f"0.0.0.0:{port}"),
    ):
        with pytest.raises(RuntimeError) as info:
            async with run_broker(str(data), args):
                pass
        out = str(info.value)
        assert f"lockgate: refusing to listen on {where} without TLS: API keys and events" in out
        assert "--insecure-plaintext" in out and "Traceback" not in out
    # With TLS the same listeners start (and loopback callers reach them).
    pki = _Pki(tmp_path)
    args = ["--listen", "0.0.0.0:0", "--http", f"0.0.0.0:{port}", *pki.serve_args()]
    async with run_broker(str(data), args) as b:
        tls = TLS(ca_file=str(pki.ca_file))
        from lockgate.clients import Client, Unauthenticated

        async with Client(f"127.0.0.1:{b.port}", tls=tls) as c:
            with pytest.raises(Unauthenticated):  # keys exist: TLS alone is no credential
                await c.publish("x.y", {})


async def test_a_standalone_gateway_speaks_tls_both_ways(tmp_path: Path) -> None:
    """`lockgate gateway http --broker grpcs://… --tls-ca … --tls-server-cert …`: HTTPS to its
    callers, TLS to the broker."""
    pki = _Pki(tmp_path)
    port = free_port()
    stop = asyncio.Event()
    async with run_broker(extra_args=pki.serve_args()) as broker, aiohttp.ClientSession() as http:
        section = {
            "listen": f"127.0.0.1:{port}",
            "tls_server_cert": str(pki.server.cert),
            "tls_server_key": str(pki.server.key),
        }
        tls = TLS(ca_file=str(pki.ca_file))
        task = asyncio.create_task(
            run_gateway("http", f"grpcs://{broker.target}", section, stop=stop, tls=tls)
        )
        try:
            url = f"https://127.0.0.1:{port}/v1/subjects/tls.gw/events"

            async def published() -> bool:
                try:
                    async with http.post(
                        url, json={}, headers=_CE, ssl=pki.client_context()
                    ) as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(published, what="the gateway publishes over TLS")
        finally:
            stop.set()
            await task


async def test_a_standalone_gateway_refuses_plaintext_on_the_network() -> None:
    with pytest.raises(BrokerError) as info:
        await run_gateway("http", "127.0.0.1:1", {"listen": "0.0.0.0:0"}, stop=asyncio.Event())
    assert info.value.reason == Reason.INSECURE_LISTEN
    assert "without TLS" in info.value.message


async def test_the_https_listener_serves_a_rotated_certificate(tmp_path: Path) -> None:
    pki = _Pki(tmp_path)
    port = free_port()
    args = [*pki.serve_args(), "--http", f"127.0.0.1:{port}"]

    async with run_broker(extra_args=args):
        before = await asyncio.to_thread(
            served_certificate, "127.0.0.1", port, pki.ca_file, "http/1.1"
        )
        wanted = replace_files(pki.ca.server(), pki.server)
        assert wanted != before

        async def rotated() -> bool:
            served = await asyncio.to_thread(
                served_certificate, "127.0.0.1", port, pki.ca_file, "http/1.1"
            )
            return served == wanted

        await eventually(rotated, timeout=10, what="new connections get the new certificate")
