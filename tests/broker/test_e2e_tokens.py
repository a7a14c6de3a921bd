"""Bearer tokens against a real ``lockgate serve``: local tokens from ``lockgate tokens issue``,
and an external issuer whose JWKS the test serves on loopback; gRPC (real client and raw
stubs) and HTTP, and open streams that end at the token's expiry."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp
import grpc
import pytest

from lockgate import clients
from lockgate.broker.local_tokens import issue_token
from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc
from tests.broker.e2e_kit import auth, error_info, event, lockgate_cli, subscribe, unique
from tests.broker.jwt_kit import ISS, JwksServer, SigningKey, claims
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _refused_grpc(target: str, token: str, reason: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.PublishOne(
                broker_pb2.PublishOneRequest(subject="t.x", event=event()),
                metadata=auth(token),
                timeout=10,
            )
        assert error_info(exc.value)[:2] == (UNAUTHENTICATED, reason), exc.value.details()


async def _refused_http(http: aiohttp.ClientSession, url: str, token: str, reason: str) -> None:
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        body = json.loads(await resp.text())
        assert body["reason"] == reason, body


async def test_local_tokens_end_to_end(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    token = (
        await asyncio.to_thread(
            lockgate_cli,
            "tokens",
            "issue",
            "--org",
            "acme",
            "--agent",
            "bot",
            "--role",
            "admin",
            "--ttl",
            "1h",
            "--data-dir",
            data,
        )
    ).strip()
    jwks = json.loads(await asyncio.to_thread(lockgate_cli, "tokens", "jwks", "--data-dir", data))
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"] and "d" not in jwks["keys"][0]
    port = _free_port()
    cfg = tmp_path / "lockgate.toml"
    cfg.write_text('[auth]\nclock_skew = "0s"\n')
    args = ["--config", str(cfg), "--http", f"127.0.0.1:{port}"]
    async with run_broker(data_dir=data, extra_args=args) as rb, aiohttp.ClientSession() as http:
        subject = unique("tok")
        # The real client takes the token where it takes a key.
        async with clients.Client(rb.target, api_key=token) as c:
            event_id = await c.publish(subject, {"n": 1})
            assert (await c.get_event(event_id)).id == event_id
        url = f"http://127.0.0.1:{port}/v1/events?subject={subject}"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()
        # The signing key exists, so the keyless dev mode is off.
        async with http.get(url) as resp:
            assert resp.status == 401
        expired = issue_token(data, "acme", "bot", ["admin"], ttl=60, now=time.time() - 3600)
        await _refused_grpc(rb.target, expired, "CREDENTIAL_EXPIRED")
        await _refused_http(http, url, expired, "CREDENTIAL_EXPIRED")
        async with clients.Client(rb.target, api_key=expired) as c:
            with pytest.raises(clients.Unauthenticated):
                await c.publish(subject, {"n": 2})

        # An open Subscribe stream ends at its token's expiry, idle.
        short = issue_token(data, "acme", "bot", [], ttl=3)
        async with grpc.aio.insecure_channel(rb.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            sub = await subscribe(stub, auth(short), pattern=unique("exp"))
            await eventually(lambda: sub.error is not None, timeout=15, what="the stream ends")
            assert sub.error is not None
            assert error_info(sub.error)[:2] == (UNAUTHENTICATED, "CREDENTIAL_EXPIRED")
            await sub.close()


async def test_an_external_issuer_end_to_end(tmp_path: Path) -> None:
    key = SigningKey.make("ES256")
    async with JwksServer() as jwks:
        jwks.publish(key)
        port = _free_port()
        cfg = tmp_path / "lockgate.toml"
        cfg.write_text(
            f"""
[[auth.issuers]]
name = "idp"
issuer = "{ISS}"
audience = "lockgate"
jwks_url = "{jwks.url}"
jwks_refresh = "1m"
"""
        )
        args = ["--config", str(cfg), "--http", f"127.0.0.1:{port}"]
        data = str(tmp_path / "data")
        async with (
            run_broker(data_dir=data, extra_args=args) as rb,
            aiohttp.ClientSession() as http,
        ):
            token = key.sign(claims(org="acme", sub="svc", roles=["admin"]))
            subject = unique("ext")
            async with clients.Client(rb.target, api_key=token) as c:
                event_id = await c.publish(subject, {"n": 1})
                assert [e.id async for e in c.query_events(subject)] == [event_id]
            url = f"http://127.0.0.1:{port}/v1/events?subject={subject}"
            async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
            wrong_aud = key.sign(claims(aud="elsewhere"))
            await _refused_grpc(rb.target, wrong_aud, "TOKEN_INVALID")
            await _refused_http(http, url, wrong_aud, "TOKEN_INVALID")
            # Another org's token does not see acme's events.
            other = key.sign(claims(org="globex", sub="spy"))
            async with clients.Client(rb.target, api_key=other) as c:
                assert [e.id async for e in c.query_events(subject)] == []
