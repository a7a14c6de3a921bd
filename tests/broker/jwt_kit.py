"""Signing keys, tokens and a JWKS server on loopback, all made by the tests themselves.

Example::

    async with JwksServer() as jwks:
        key = SigningKey.make("ES256")
        jwks.publish(key)
        token = key.sign({"iss": ISS, "aud": "lockgate", "sub": "a1", "org": "acme"})
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["ISS", "JwksServer", "SigningKey", "claims"]

ISS = "https://idp.test.example"


@dataclass
class SigningKey:
    alg: str
    private: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @classmethod
    def make(cls, alg: str) -> SigningKey:
        if alg == "EdDSA":
            return cls(alg, ed25519.Ed25519PrivateKey.generate())
        if alg == "ES256":
            return cls(alg, ec.generate_private_key(ec.SECP256R1()))
        if alg == "RS256":
            return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        raise ValueError(alg)

    def jwk(self) -> dict[str, Any]:
        to_jwk = {"EdDSA": OKPAlgorithm, "ES256": ECAlgorithm, "RS256": RSAAlgorithm}[self.alg]
        jwk: dict[str, Any] = to_jwk.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, payload: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            payload, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers}
        )


def claims(**over: Any) -> dict[str, Any]:
    """Valid claims for issuer :data:`ISS` and audience ``lockgate``, with ``over`` applied
    (a value of None removes the claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": "lockgate",
        "sub": "agent-1",
        "org": "acme",
        "roles": ["reader"],
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


class JwksServer:
    """Serves ``/jwks.json`` on 127.0.0.1 from :attr:`keys` (change it to rotate), counting
    fetches; :meth:`stop` makes it unreachable."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [k.jwk() for k in keys]

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": self.keys})

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/jwks.json"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
