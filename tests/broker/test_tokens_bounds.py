"""Attacks on JWT verification (broker/tokens.py): a JWKS URL that never finishes or serves
50 MB is bounded in time and size (the cached keys stay), and an oversized bearer token is
refused before it is parsed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from lockgate.broker import tokens as tokens_module
from lockgate.broker.errors import Unauthenticated
from lockgate.broker.token_issuers import parse_issuers
from lockgate.broker.tokens import TokenVerifier
from tests.broker.jwt_kit import ISS, SigningKey, claims


async def _trickle(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    await resp.write(b'{"keys": [')
    with contextlib.suppress(ConnectionError):
        while True:  # a byte now and then: no socket timeout ever fires
            await resp.write(b" ")
            await asyncio.sleep(0.1)
    return resp


async def _huge(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    chunk = b" " * (1 << 20)
    with contextlib.suppress(ConnectionError):
        await resp.write(b'{"keys": [')
        for _ in range(50):  # 50 MB
            await resp.write(chunk)
        await resp.write(b"]}")
    return resp


@contextlib.asynccontextmanager
async def _hostile_idp() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/trickle", _trickle)
    app.router.add_get("/huge", _huge)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _verifier(url: str) -> TokenVerifier:
    table = {"name": "idp", "issuer": ISS, "audience": "lockgate", "jwks_url": url}
    verifier = TokenVerifier(parse_issuers([table], clock_skew=5))
    await verifier.start()
    return verifier


@pytest.mark.parametrize("path", ["/trickle", "/huge"])
async def test_a_hostile_jwks_url_is_bounded(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "_FETCH_TIMEOUT", 1.0)
    async with _hostile_idp() as base:
        started = time.monotonic()
        verifier = await _verifier(base + path)
        token = SigningKey.make("ES256").sign(claims())
        with pytest.raises(Unauthenticated) as exc:
            await verifier.verify(token)
        elapsed = time.monotonic() - started
        await verifier.close()
    assert exc.value.reason == "TOKEN_INVALID"
    assert "could not be loaded" in exc.value.message, exc.value.message
    assert elapsed < 5, elapsed  # the whole fetch, not each read, is bounded


async def test_an_oversized_bearer_token_is_refused_unparsed() -> None:
    verifier = TokenVerifier(parse_issuers([], clock_skew=5))
    await verifier.start()
    token = SigningKey.make("ES256").sign(claims(roles=[f"r{i}" for i in range(10_000)]))
    assert len(token) > tokens_module.MAX_TOKEN_BYTES
    with pytest.raises(Unauthenticated) as exc:
        await verifier.verify(token)
    assert exc.value.reason == "TOKEN_INVALID"
    assert "bytes" in exc.value.message, exc.value.message
    with pytest.raises(Unauthenticated):
        await verifier.verify("x" * (1 << 20))
    await verifier.close()
