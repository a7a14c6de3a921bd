"""JWT bearer tokens through the broker's Authenticator, against a JWKS that the test serves on
loopback with keys it generates: each algorithm, and every way a token is refused."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from lockgate.broker import tokens as tokens_module
from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.config import ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.errors import Unauthenticated
from lockgate.broker.local_tokens import issue_token, key_path
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.token_issuers import local_issuer, parse_issuers
from lockgate.broker.tokens import TokenVerifier
from tests.broker.jwt_kit import ISS, JwksServer, SigningKey, claims
from tests.support import eventually

HS_SECRET = "s" * 40


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    async with JwksServer() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store", fsync="os")
    await s.open()
    yield s
    await s.close()


async def _auth(
    store: SqliteStore, tables: list[dict[str, Any]], tmp_path: Path | None = None
) -> Authenticator:
    issuers = parse_issuers(tables, clock_skew=5)
    if tmp_path is not None:
        issuers.append(local_issuer(str(tmp_path), 5))
    verifier = TokenVerifier(issuers)
    await verifier.start()
    return Authenticator(store, dev_mode=False, tokens=verifier)


def _issuer(url: str, **over: Any) -> dict[str, Any]:
    return {"name": "idp", "issuer": ISS, "audience": "lockgate", "jwks_url": url, **over}


async def _refused(auth: Authenticator, token: str, reason: str, words: str) -> None:
    with pytest.raises(Unauthenticated) as exc:
        await auth.authenticate(token)
    assert exc.value.code.name == "UNAUTHENTICATED"
    assert exc.value.reason == reason, exc.value
    assert words in exc.value.message, exc.value.message


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
async def test_each_algorithm_is_accepted(jwks: JwksServer, store: SqliteStore, alg: str) -> None:
    key = SigningKey.make(alg)
    jwks.publish(key)
    auth = await _auth(store, [_issuer(jwks.url)])
    token = key.sign(claims(roles=["reader", "writer"]))
    assert await auth.authenticate(token) == Principal(
        "acme", "agent-1", frozenset({"reader", "writer"})
    )
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_rejections(jwks: JwksServer, store: SqliteStore) -> None:
    key, other = SigningKey.make("ES256"), SigningKey.make("ES256")
    jwks.publish(key)
    auth = await _auth(store, [_issuer(jwks.url, clock_skew="5s")])
    now = claims()["iat"]
    await _refused(auth, key.sign(claims(exp=now - 60)), "CREDENTIAL_EXPIRED", "expired")
    await _refused(auth, key.sign(claims(nbf=now + 600)), "TOKEN_INVALID", "not valid yet")
    await _refused(auth, key.sign(claims(iss="https://evil")), "TOKEN_INVALID", "not trusted")
    await _refused(auth, key.sign(claims(aud="another-service")), "TOKEN_INVALID", "audience")
    await _refused(auth, key.sign(claims(aud=None)), "TOKEN_INVALID", "'aud'")
    await _refused(auth, key.sign(claims(exp=None)), "TOKEN_INVALID", "'exp'")
    await _refused(auth, key.sign(claims(org=None)), "TOKEN_INVALID", "no org")
    await _refused(auth, key.sign(claims(sub=None)), "TOKEN_INVALID", "no agent")
    await _refused(auth, key.sign(claims(roles=[1, 2])), "TOKEN_INVALID", "roles")
    # Signed by another key under the published key's id.
    forged = SigningKey("ES256", other.private, kid=key.kid).sign(claims())
    await _refused(auth, forged, "TOKEN_INVALID", "signature does not verify")
    # A good token with its payload swapped.
    head, _, sig = key.sign(claims()).split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims(org="globex")).encode()).rstrip(b"=")
    await _refused(auth, f"{head}.{body.decode()}.{sig}", "TOKEN_INVALID", "signature")
    unsigned = jwt.encode(claims(), None, algorithm="none")
    await _refused(auth, unsigned, "TOKEN_INVALID", "'none'")
    # An alg that is no string (a list is unhashable: it raised TypeError, answered UNKNOWN).
    listed = base64.urlsafe_b64encode(json.dumps({"alg": ["ES256"]}).encode()).rstrip(b"=")
    await _refused(auth, f"{listed.decode()}.{body.decode()}.{sig}", "TOKEN_INVALID", "alg")
    await _refused(auth, "a.b.c", "TOKEN_INVALID", "not a well-formed JWT")
    await _refused(auth, "not-a-key", "UNAUTHENTICATED", "neither an API key nor a JWT")
    # Within the clock skew, a token just past its exp still works.
    assert (await auth.authenticate(key.sign(claims(exp=now - 2)))).agent == "agent-1"
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_hs256_is_refused_unless_the_issuer_enables_it(
    jwks: JwksServer, store: SqliteStore
) -> None:
    key = SigningKey.make("RS256")
    jwks.publish(key)
    hs = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    # HS256 under another secret (what an attacker holding only public keys could make).
    wrong = jwt.encode(claims(), "x" * 40, algorithm="HS256")
    auth = await _auth(store, [_issuer(jwks.url)])
    await _refused(auth, hs, "TOKEN_INVALID", "does not accept tokens signed with HS256")
    await _refused(auth, wrong, "TOKEN_INVALID", "HS256")
    assert auth.tokens is not None
    await auth.tokens.close()
    enabled = await _auth(store, [_issuer(jwks.url, hs256_secret=HS_SECRET)])
    assert (await enabled.authenticate(hs)).org == "acme"
    await _refused(enabled, wrong, "TOKEN_INVALID", "signature")
    # RS256 still works beside it.
    assert (await enabled.authenticate(key.sign(claims()))).org == "acme"
    assert enabled.tokens is not None
    await enabled.tokens.close()


async def test_an_unknown_kid_refetches_the_jwks_once_then_refuses(
    jwks: JwksServer, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens_module, "KID_REFETCH_SECONDS", 0.0)
    old, new = SigningKey.make("EdDSA"), SigningKey.make("EdDSA")
    jwks.publish(old)
    auth = await _auth(store, [_issuer(jwks.url)])
    assert jwks.fetches == 1
    assert (await auth.authenticate(old.sign(claims()))).agent == "agent-1"
    # The issuer rotates: a token with the new kid makes one fetch, then verifies.
    jwks.publish(old, new)
    assert (await auth.authenticate(new.sign(claims(sub="b")))).agent == "b"
    assert jwks.fetches == 2
    # A kid the issuer never published: fetched once more, then refused.
    stranger = SigningKey.make("EdDSA")
    await _refused(auth, stranger.sign(claims()), "TOKEN_INVALID", "publishes no key")
    assert jwks.fetches == 3
    # A key withdrawn from the JWKS withdraws its tokens, cached or not, after a reload.
    token = old.sign(claims(sub="c"))
    assert (await auth.authenticate(token)).agent == "c"
    jwks.publish(new)
    await _refused(auth, stranger.sign(claims(sub="d")), "TOKEN_INVALID", "publishes no key")
    await _refused(auth, token, "TOKEN_INVALID", "publishes no key")
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_unknown_kids_do_not_hammer_the_issuer(jwks: JwksServer, store: SqliteStore) -> None:
    key = SigningKey.make("EdDSA")
    jwks.publish(key)
    auth = await _auth(store, [_issuer(jwks.url)])
    for _ in range(20):
        await _refused(auth, SigningKey.make("EdDSA").sign(claims()), "TOKEN_INVALID", "no key")
    assert jwks.fetches <= 2  # KID_REFETCH_SECONDS apart at most
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_an_unreachable_jwks_url_keeps_the_cached_keys(
    jwks: JwksServer, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    key = SigningKey.make("ES256")
    jwks.publish(key)
    auth = await _auth(store, [_issuer(jwks.url, jwks_refresh="1s")])
    assert (await auth.authenticate(key.sign(claims()))).org == "acme"
    await jwks.stop()
    with caplog.at_level(logging.WARNING, logger="lockgate.auth"):
        await eventually(
            lambda: "auth.jwks.refresh_failed" in caplog.text, what="a failed refresh is logged"
        )
    # New tokens signed by the cached key keep working.
    assert (await auth.authenticate(key.sign(claims(sub="later")))).agent == "later"
    assert "keeping 1 cached key(s)" in caplog.text
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_an_issuer_unreachable_from_the_start_refuses_with_a_sentence(
    store: SqliteStore,
) -> None:
    async with JwksServer() as gone:
        url = gone.url
    auth = await _auth(store, [_issuer(url)])
    key = SigningKey.make("ES256")
    await _refused(auth, key.sign(claims()), "TOKEN_INVALID", "could not be loaded")
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_claim_names_are_per_issuer(
    jwks: JwksServer, store: SqliteStore, tmp_path: Path
) -> None:
    key = SigningKey.make("RS256")
    jwks.publish(key)
    jwks_file = tmp_path / "jwks.json"
    file_key = SigningKey.make("EdDSA")
    jwks_file.write_text(json.dumps({"keys": [file_key.jwk()]}))
    tables = [
        _issuer(
            jwks.url,
            org_claim="https://example.com/tenant",
            agent_claim="client_id",
            roles_claim="realm_access.roles",
        ),
        {
            "name": "file",
            "issuer": "https://fixed.example",
            "audience": ["x", "lockgate"],
            "jwks_file": str(jwks_file),
            "org": "fixed-org",
            "roles_claim": "scope",
        },
    ]
    auth = await _auth(store, tables)
    token = key.sign(
        claims(
            org=None,
            sub=None,
            roles=None,
            client_id="svc-1",
            realm_access={"roles": ["admin"]},
            **{"https://example.com/tenant": "t1"},
        )
    )
    assert await auth.authenticate(token) == Principal("t1", "svc-1", frozenset({"admin"}))
    # A fixed org wins over any org claim; a space-separated scope is a list of roles.
    token = file_key.sign(claims(iss="https://fixed.example", org="evil", scope="a b"))
    assert await auth.authenticate(token) == Principal(
        "fixed-org", "agent-1", frozenset({"a", "b"})
    )
    assert auth.tokens is not None
    await auth.tokens.close()


async def test_local_tokens_are_trusted_and_the_key_may_appear_later(
    store: SqliteStore, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    auth = await _auth(store, [], tmp_path=data_dir)
    assert auth.tokens is not None and not auth.tokens.has_signing_key()
    token = issue_token(data_dir, "acme", "a1", ["admin", "reader"], ttl=60)
    assert key_path(data_dir).stat().st_mode & 0o777 == 0o600
    assert auth.tokens.has_signing_key()
    assert await auth.authenticate(token) == Principal("acme", "a1", frozenset({"admin", "reader"}))
    expired = issue_token(data_dir, "acme", "a1", [], ttl=60, now=claims()["iat"] - 3600)
    await _refused(auth, expired, "CREDENTIAL_EXPIRED", "expired")
    # Another data dir's key is another key.
    foreign = issue_token(tmp_path / "other", "acme", "a1", [], ttl=60)
    await _refused(auth, foreign, "TOKEN_INVALID", "publishes no key")
    await auth.tokens.close()


async def test_no_issuer_means_no_token(store: SqliteStore) -> None:
    auth = Authenticator(store, dev_mode=False)
    await _refused(auth, SigningKey.make("EdDSA").sign(claims()), "TOKEN_INVALID", "no token")


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"issuer": ISS, "jwks_url": "http://x/j"}, "audience is required"),
        ({"audience": "a", "jwks_url": "http://x/j"}, "issuer is required"),
        ({"issuer": ISS, "audience": "a"}, "exactly one of jwks_url and jwks_file"),
        ({"issuer": ISS, "audience": "a", "jwks_url": "ftp://x"}, "not an http(s) URL"),
        (
            {"issuer": ISS, "audience": "a", "jwks_url": "http://x", "algorithms": ["none"]},
            "'none'",
        ),
        (
            {"issuer": ISS, "audience": "a", "jwks_url": "http://x", "algorithms": ["HS256"]},
            "HS256 needs",
        ),
        ({"issuer": ISS, "audience": "a", "hs256_secret": "short"}, "shorter than 32 bytes"),
        ({"issuer": ISS, "audience": "a", "jwks_url": "http://x", "colour": 1}, "unknown setting"),
        ({"issuer": "lockgate-local", "audience": "a", "jwks_url": "http://x"}, "broker's own"),
        (
            {"issuer": ISS, "audience": "a", "jwks_url": "http://x", "clock_skew": "1h"},
            "at most 5m",
        ),
    ],
)
def test_bad_issuer_settings_are_config_errors(table: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_issuers([table], clock_skew=30)
    assert words in exc.value.message


def test_auth_settings_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "lockgate.toml"
    path.write_text(
        """
[auth]
clock_skew = "10s"
local_issuer = false

[[auth.issuers]]
name = "corp"
issuer = "https://idp.example.com/"
audience = "lockgate"
jwks_url = "https://idp.example.com/.well-known/jwks.json"
hs256_secret = "0123456789abcdef0123456789abcdef"
"""
    )
    cfg = load_config(config_file=str(path), env={})
    assert (cfg.auth_clock_skew, cfg.auth_local_issuer) == (10.0, False)
    assert cfg.auth_issuers[0]["name"] == "corp"
    (issuer,) = parse_issuers(cfg.auth_issuers, clock_skew=cfg.auth_clock_skew)
    assert issuer.clock_skew == 10.0 and "HS256" in issuer.algorithms
    assert "0123456789abcdef" not in repr(issuer)
    cfg = load_config(env={"LOCKGATE_AUTH_CLOCK_SKEW": "1m", "LOCKGATE_AUTH_LOCAL_ISSUER": "no"})
    assert (cfg.auth_clock_skew, cfg.auth_local_issuer) == (60.0, False)
    with pytest.raises(ConfigError, match="out of range"):
        load_config(env={"LOCKGATE_AUTH_CLOCK_SKEW": "1h"})
    path.write_text("[auth]\nclock = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'clock' in \\[auth\\]"):
        load_config(config_file=str(path), env={})
