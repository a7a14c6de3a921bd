"""The local token issuer: short-lived JWTs signed with an Ed25519 key in the data directory.

For teams without an identity provider: ``lockgate tokens issue --org O --agent A --ttl 1h``
signs a token with the key in ``<data-dir>/token-signing-key.pem``, creating the key on first
use (mode 0600). The broker trusts that key's public half as the ``local`` issuer (see
:mod:`broker.tokens`) without any configuration, re-reading the file when a token names a
key id it does not know, so a key created while the broker runs is picked up.

Example::

    token = issue_token("./lockgate-data", "acme", "billing-agent", ["reader"], ttl=3600)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lockgate.broker.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "KEY_FILE",
    "LOCAL_AUDIENCE",
    "LOCAL_ISSUER",
    "MAX_TTL",
    "issue_token",
    "key_path",
    "load_or_create_key",
    "load_signing_key",
    "public_jwks",
]

KEY_FILE = "token-signing-key.pem"
LOCAL_ISSUER = "lockgate-local"
LOCAL_AUDIENCE = "lockgate"
MAX_TTL = 30 * 86400.0
"""The longest lifetime of a local token: tokens cannot be revoked one by one, so they are
meant to be short-lived (an API key with ``--ttl`` is the revocable long-lived credential)."""


def key_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / KEY_FILE


def load_signing_key(data_dir: str | os.PathLike[str]) -> Ed25519PrivateKey | None:
    """The local signing key, or None when none was created yet."""
    path = key_path(data_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FailedPrecondition(
            f"the token signing key {path} cannot be read: {exc.strerror}",
            hint="check the file's owner and permissions",
        ) from None
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except ValueError:
        raise FailedPrecondition(
            f"the token signing key {path} is not a PEM private key",
            hint="move it away; `lockgate tokens issue` then creates a new one",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FailedPrecondition(
            f"the token signing key {path} is not an Ed25519 key",
            hint="move it away; `lockgate tokens issue` then creates a new one",
        )
    return key


def load_or_create_key(data_dir: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The local signing key, created on first use. Two processes creating it at once agree
    on one key: each writes a private temporary file and links it into place, which fails
    for the second (no half-written key is ever visible)."""
    key = load_signing_key(data_dir)
    if key is not None:
        return key
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = key_path(data_dir)
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    key = load_signing_key(data_dir)
    assert key is not None
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64(x)}
    # The key id is the RFC 7638 thumbprint: the SHA-256 of the required members, sorted.
    thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return {**jwk, "kid": _b64(thumb.digest()), "alg": "EdDSA", "use": "sig"}


def public_jwks(key: Ed25519PrivateKey) -> dict[str, Any]:
    """The JWKS of ``key``'s public half (what ``lockgate tokens jwks`` prints)."""
    return {"keys": [_public_jwk(key)]}


def issue_token(
    data_dir: str | os.PathLike[str],
    org: str,
    agent: str,
    roles: Sequence[str],
    *,
    ttl: float,
    now: float | None = None,
) -> str:
    """A token for ``org``/``agent`` with ``roles``, valid for ``ttl`` seconds, signed with
    the local key (created on first use). Its claims are those the ``local`` issuer reads:
    ``iss``, ``aud``, ``sub`` (the agent), ``org``, ``roles``, ``iat``, ``nbf``, ``exp``,
    ``jti``."""
    if not 0 < ttl <= MAX_TTL:
        raise InvalidArgument(
            f"a token lifetime of {ttl:g} s is out of range",
            reason="INVALID_ARGUMENT",
            hint="use --ttl between 1s and 30d; for a long-lived credential create an API key",
        )
    if not org or not agent:
        raise InvalidArgument("a token needs an org and an agent", hint="pass --org and --agent")
    key = load_or_create_key(data_dir)
    now = time.time() if now is None else now
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": agent,
        "org": org,
        "roles": sorted(set(roles)),
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": _public_jwk(key)["kid"]})
