"""JWT bearer tokens beside API keys: trusted issuers, their keys, and verification.

A token is sent where a key is (``authorization: Bearer <token>``) and told apart by its
shape: three base64url parts joined by dots, where a key is ``lg_<id>_<secret>``. It is
accepted when

- its ``iss`` names a configured issuer (``[[auth.issuers]]``, or ``lockgate-local``, the
  tokens of ``lockgate tokens issue``);
- its ``alg`` is one the issuer accepts: EdDSA, ES256 or RS256 (HS256 only for an issuer
  given an ``hs256_secret``; ``none`` never);
- a key of the issuer's JWKS (a file, or a URL re-fetched every ``jwks_refresh``) with the
  token's ``kid`` verifies the signature: an unknown ``kid`` makes one re-read of the JWKS
  (at most once per :data:`KID_REFETCH_SECONDS`) before the token is refused;
- ``exp`` (required), ``nbf``, ``iss`` and ``aud`` (required) hold, within ``clock_skew``.

The principal comes from the issuer's claims: ``org_claim`` (or a fixed ``org``),
``agent_claim`` (``sub`` by default) and ``roles_claim`` (a list of strings, or one string
of space-separated names as in OAuth's ``scope``); a dotted claim name reaches into nested
objects (``realm_access.roles``). Verification uses PyJWT (``pyjwt[crypto]``); results are
cached by token until the token expires, so a busy caller costs one dict look-up per call.

The issuers' settings and their checks are ``broker.token_issuers``. A JWKS URL that cannot
be reached keeps the keys fetched last: tokens signed by them keep working, and the failure
is logged (``auth.jwks.refresh_failed``) on every attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jwt

from lockgate.broker.errors import Reason, Unauthenticated
from lockgate.broker.local_tokens import (
    key_path,
    load_signing_key,
    public_jwks,
)
from lockgate.broker.token_issuers import KEY_FAMILY, IssuerSettings

__all__ = ["KID_REFETCH_SECONDS", "MAX_TOKEN_BYTES", "TokenVerifier", "VerifiedToken"]

KID_REFETCH_SECONDS = 1.0
_FETCH_TIMEOUT = 5.0
_MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_BYTES = 16 * 1024
"""Longer bearer tokens are refused before they are parsed (the transports cap a header near
8 KiB anyway; this bounds what the caches and the parser ever see, roles included)."""
_CACHE_SIZE = 10_000
_NEGATIVE_SIZE = 1024
_NEGATIVE_SECONDS = 5.0
# Which key types sign with which algorithm (a key never verifies another family's tokens).
log = logging.getLogger("lockgate.auth")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that verified: who it speaks for and until when (Unix seconds, skew added)."""

    org: str
    agent: str
    roles: frozenset[str]
    expires: float
    issuer: str
    kid: str


def _invalid(message: str, hint: str = "") -> Unauthenticated:
    return Unauthenticated(
        message,
        reason=Reason.TOKEN_INVALID,
        hint=hint or "get a new token from the issuer; check the broker's [[auth.issuers]]",
    )


class _IssuerKeys:
    """One issuer's verification keys: loaded (in a thread: a file read or an HTTP GET),
    re-loaded on its schedule and when a token names an unknown ``kid``."""

    def __init__(self, settings: IssuerSettings) -> None:
        self.settings = settings
        self.keys: list[jwt.PyJWK] = []
        self.kids: frozenset[str] = frozenset()
        self.loaded = False
        self._tried = -math.inf
        self._mtime = 0
        self._lock = asyncio.Lock()
        if settings.hs256_secret:
            self._secret = jwt.PyJWK(
                {
                    "kty": "oct",
                    "k": jwt.utils.base64url_encode(settings.hs256_secret.encode()).decode(),
                },
                algorithm="HS256",
            )

    def _read(self) -> dict[str, Any]:
        s = self.settings
        if s.signing_key_dir:
            self._mtime = _mtime(key_path(s.signing_key_dir))
            key = load_signing_key(s.signing_key_dir)
            return public_jwks(key) if key is not None else {"keys": []}
        if s.jwks_file:
            raw = Path(s.jwks_file).read_bytes()[:_MAX_JWKS_BYTES]
        elif s.jwks_url:
            req = urllib.request.Request(s.jwks_url, headers={"Accept": "application/json"})
            # The whole fetch within _FETCH_TIMEOUT, not each read: an issuer that sends a
            # byte now and then never trips the socket timeout.
            deadline = time.monotonic() + _FETCH_TIMEOUT
            buf = bytearray()
            with urllib.request.urlopen(req, timeout=_FETCH_TIMEOUT) as resp:
                while len(buf) <= _MAX_JWKS_BYTES:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the JWKS did not arrive within {_FETCH_TIMEOUT:g}s")
                    chunk = resp.read1(1 << 16)
                    if not chunk:
                        break
                    buf += chunk
            raw = bytes(buf)
            if len(raw) > _MAX_JWKS_BYTES:
                raise ValueError(f"the JWKS is over {_MAX_JWKS_BYTES} bytes")
        else:
            return {"keys": []}
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("it is not a JWKS (an object with a 'keys' list)")
        return doc

    async def load(self) -> bool:
        """Re-reads the keys; on failure keeps the ones it had (and says so). Concurrent
        callers share one read."""
        tried = self._tried
        async with self._lock:
            if self._tried != tried:  # another caller read them meanwhile
                return self.loaded
            self._tried = time.monotonic()
            s = self.settings
            try:
                # Bounded here too: a head trickled byte by byte holds the thread's read.
                doc = await asyncio.wait_for(asyncio.to_thread(self._read), 2 * _FETCH_TIMEOUT)
                keys = []
                for item in doc["keys"]:
                    # Keys of other types or uses (encryption keys in an OIDC JWKS) are
                    # skipped, not fatal.
                    if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                        continue
                    try:
                        keys.append(jwt.PyJWK(item))
                    except jwt.PyJWKError:
                        continue
            except Exception as exc:  # any failure keeps the cached keys
                log.warning(
                    "auth.jwks.refresh_failed: issuer %s (%s): %s; keeping %d cached key(s)",
                    s.name,
                    s.jwks_url or s.jwks_file or key_path(s.signing_key_dir),
                    exc,
                    len(self.keys),
                )
                return False
            self.keys = keys
            self.kids = frozenset(k.key_id for k in keys if k.key_id)
            self.loaded = True
            return True

    def candidates(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        if alg == "HS256":
            return [self._secret] if self.settings.hs256_secret else []
        family = KEY_FAMILY[alg]
        return [
            k
            for k in self.keys
            if k.key_type == family
            and (kid is None or k.key_id in (None, kid))
            and k.algorithm_name == alg
        ]

    async def find(self, kid: str | None, alg: str) -> list[jwt.PyJWK]:
        found = self.candidates(kid, alg)
        if (
            not found
            and alg != "HS256"
            and (time.monotonic() - self._tried >= KID_REFETCH_SECONDS or self._file_changed())
        ):
            await self.load()  # the issuer may have rotated its keys: look once more
            found = self.candidates(kid, alg)
        return found

    def _file_changed(self) -> bool:
        """Whether the local signing key file changed since it was read (a cheap stat: the
        key made by the first `lockgate tokens issue` is trusted at once)."""
        s = self.settings
        return bool(s.signing_key_dir) and _mtime(key_path(s.signing_key_dir)) != self._mtime

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.jwks_refresh)
            await self.load()


def _remember(
    table: dict[str, tuple[float, T]], size: int, token: str, entry: tuple[float, T]
) -> None:
    """Adds ``entry``, first dropping the stale entries of a full table (all, if none is)."""
    if len(table) >= size:
        now = time.time()
        for stale in [t for t, v in table.items() if v[0] <= now]:
            del table[stale]
        if len(table) >= size:
            table.clear()
    table[token] = entry


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class TokenVerifier:
    """Verifies tokens against the trusted issuers; :meth:`start` loads their keys and keeps
    them fresh, :meth:`close` stops that."""

    def __init__(self, issuers: Sequence[IssuerSettings]) -> None:
        self._issuers = {s.issuer: _IssuerKeys(s) for s in issuers}
        self._by_name = {k.settings.name: k for k in self._issuers.values()}
        self._tasks: list[asyncio.Task[None]] = []
        # Verified tokens until their exp; refusals for a few seconds (a client retrying one
        # bad token costs a look-up, not a verification), in a smaller table of their own.
        self._cache: dict[str, tuple[float, VerifiedToken]] = {}
        self._refused: dict[str, tuple[float, Unauthenticated]] = {}

    @property
    def issuers(self) -> list[IssuerSettings]:
        return [k.settings for k in self._issuers.values()]

    def has_signing_key(self) -> bool:
        """Whether any issuer could sign a token now (ends the keyless dev mode): an external
        issuer always could; the local one once its key file exists."""
        for k in self._issuers.values():
            if not k.settings.signing_key_dir or key_path(k.settings.signing_key_dir).exists():
                return True
        return False

    async def start(self) -> None:
        """Loads every issuer's keys (a failure is logged, and the keys are tried again on
        the schedule and at the first token), then refreshes them in the background."""
        await asyncio.gather(*(k.load() for k in self._issuers.values()))
        self._tasks = [asyncio.create_task(k.refresh_forever()) for k in self._issuers.values()]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def still_valid(self, token: VerifiedToken, now: float) -> Unauthenticated | None:
        """Why an open stream's token no longer holds (expired, or its key was withdrawn
        from the issuer's JWKS), or None."""
        if now >= token.expires:
            return Unauthenticated(
                "the token expired",
                reason=Reason.CREDENTIAL_EXPIRED,
                hint="reconnect with a fresh token",
            )
        if not self._kid_known(token):
            return _invalid(
                f"the key {token.kid!r} that signed the token is no longer published "
                f"by issuer {token.issuer!r}",
                hint="reconnect with a token signed by a current key",
            )
        return None

    async def verify(self, token: str) -> VerifiedToken:
        """The verified token; raises :class:`Unauthenticated` (reason TOKEN_INVALID or
        CREDENTIAL_EXPIRED) with the sentence that says what is wrong."""
        if len(token) > MAX_TOKEN_BYTES:
            raise _invalid(
                f"the bearer token is over {MAX_TOKEN_BYTES} bytes",
                hint="ask the issuer for a smaller token (fewer roles or claims)",
            )
        now = time.time()
        hit = self._cache.get(token)
        # A key withdrawn from the issuer's JWKS withdraws its tokens too.
        if hit is not None and now < hit[0] and self._kid_known(hit[1]):
            return hit[1]
        refused = self._refused.get(token)
        if refused is not None and now < refused[0]:
            err = refused[1]  # a fresh one: re-raising one object grows its traceback
            raise Unauthenticated(err.message, reason=err.reason, hint=err.hint)
        try:
            verified = await self._verify(token, now)
        except Unauthenticated as err:
            _remember(self._refused, _NEGATIVE_SIZE, token, (now + _NEGATIVE_SECONDS, err))
            raise
        _remember(self._cache, _CACHE_SIZE, token, (verified.expires, verified))
        return verified

    def _kid_known(self, token: VerifiedToken) -> bool:
        keys = self._by_name.get(token.issuer)
        return not token.kid or (keys is not None and token.kid in keys.kids)

    async def _verify(self, token: str, now: float) -> VerifiedToken:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid(
                "the bearer token is not a well-formed JWT",
                hint="send an API key (lg_<id>_<secret>) or a JWT from a trusted issuer",
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in KEY_FAMILY:  # a list is unhashable
            raise _invalid(f"tokens signed with alg {alg!r} are not accepted")
        iss = unverified.get("iss")
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise _invalid(
                f"the token's issuer {iss!r} is not trusted by this broker",
                hint="configure it in [[auth.issuers]], or use `lockgate tokens issue`",
            )
        s = keys.settings
        if alg not in s.algorithms:
            raise _invalid(
                f"issuer {s.name!r} does not accept tokens signed with {alg}",
                hint="accepted: " + ", ".join(s.algorithms),
            )
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        candidates = await keys.find(kid, alg)
        if not candidates:
            what = f"with key id {kid!r}" if kid else f"for {alg}"
            if not keys.loaded:
                raise _invalid(
                    f"the keys of issuer {s.name!r} could not be loaded",
                    hint="the broker's log says why (auth.jwks.refresh_failed)",
                )
            raise _invalid(f"issuer {s.name!r} publishes no key {what}")
        claims: dict[str, Any] | None = None
        for candidate in candidates:
            try:
                claims = jwt.decode(
                    token,
                    candidate.key,
                    algorithms=[alg],
                    audience=list(s.audience),
                    issuer=s.issuer,
                    leeway=s.clock_skew,
                    options={"require": ["exp", "iss", "aud"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated(
                    "the token expired",
                    reason=Reason.CREDENTIAL_EXPIRED,
                    hint="get a new token (`lockgate tokens issue`, or from the issuer)",
                ) from None
            except jwt.ImmatureSignatureError:
                raise _invalid("the token is not valid yet (nbf is in the future)") from None
            except jwt.InvalidAudienceError:
                raise _invalid(
                    "the token's audience is not this broker",
                    hint="accepted audiences: " + ", ".join(s.audience),
                ) from None
            except jwt.MissingRequiredClaimError as exc:
                raise _invalid(f"the token has no {exc.claim!r} claim") from None
            except jwt.PyJWTError as exc:
                raise _invalid(f"the token is not valid: {exc}") from None
        if claims is None:
            raise _invalid(f"the token's signature does not verify with issuer {s.name!r}'s keys")
        return self._principal(claims, s, kid or "")

    @staticmethod
    def _principal(claims: Mapping[str, Any], s: IssuerSettings, kid: str) -> VerifiedToken:
        org = s.org or _claim(claims, s.org_claim)
        agent = _claim(claims, s.agent_claim)
        roles = _claim(claims, s.roles_claim)
        if not isinstance(org, str) or not org:
            raise _invalid(f"the token has no org (claim {s.org_claim!r})")
        if not isinstance(agent, str) or not agent:
            raise _invalid(f"the token has no agent (claim {s.agent_claim!r})")
        if roles is None:
            roles = []
        elif isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _invalid(f"the token's roles (claim {s.roles_claim!r}) are not strings")
        expires = float(claims["exp"]) + s.clock_skew
        return VerifiedToken(org, agent, frozenset(roles), expires, s.name, kid)
