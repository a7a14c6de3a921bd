"""Credentials (API keys and bearer tokens) and principals.

A key looks like ``lg_<key id>_<secret>``. The store keeps only the SHA-256 of the secret
(the secret has 256 bits of entropy, so a slow hash buys nothing), so a key is shown once,
when it is created. With no key configured the broker runs in an open dev mode on loopback
only, where callers without a key act as ``default/anonymous`` with every role. The dev mode
ends by itself once a key exists (``lockgate keys create`` beside a running broker): the
broker looks at most once a second while anonymous calls arrive, so no restart is needed.

A credential that is not a key but has a JWT's shape is a bearer token, verified by
:class:`broker.tokens.TokenVerifier` against the trusted issuers (configured ones, and the
``local`` issuer of ``lockgate tokens issue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.broker.errors import NotFound, Reason, Unauthenticated
from lockgate.broker.store import ApiKeyRecord, KeyStore, Store

if TYPE_CHECKING:
    from lockgate.broker.tls import ClientIdentities
    from lockgate.broker.tokens import TokenVerifier, VerifiedToken

__all__ = [
    "DEV_PRINCIPAL",
    "Authenticator",
    "Principal",
    "create_key",
    "is_token",
    "rotate_key",
    "split_key",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: their org, their agent name and their roles (what the roles allow is
    decided in one place, :mod:`lockgate.broker.permissions`)."""

    org: str
    agent: str
    roles: frozenset[str]


DEV_PRINCIPAL = Principal("default", "anonymous", frozenset({"admin"}))
_CACHE_SECONDS = 5.0
_DEV_CHECK_SECONDS = 1.0
_WATCH_SECONDS = 1.0
log = logging.getLogger("lockgate.auth")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """``(key id, secret)`` of a key; raises :class:`Unauthenticated` when malformed."""
    parts = key.strip().split("_")
    if len(parts) != 3 or parts[0] != "lg" or not parts[1] or not parts[2]:
        raise Unauthenticated(
            "the credential is neither an API key nor a JWT",
            hint="keys look like lg_<id>_<secret> (`lockgate keys create`); tokens are JWTs "
            "(`lockgate tokens issue`)",
        )
    return parts[1], parts[2]


def is_token(credential: str) -> bool:
    """Whether a credential has a JWT's shape (three parts joined by dots) rather than an
    API key's (``lg_<id>_<secret>``)."""
    return credential.count(".") == 2 and not credential.startswith("lg_")


def _copy(err: Unauthenticated) -> Unauthenticated:
    return Unauthenticated(err.message, reason=err.reason, hint=err.hint)


def _revoked() -> Unauthenticated:
    return Unauthenticated(
        "the API key was revoked",
        reason=Reason.CREDENTIAL_REVOKED,
        hint="use a key that is not revoked (`lockgate keys list`)",
    )


def _expired(what: str = "API key") -> Unauthenticated:
    return Unauthenticated(
        f"the {what} expired",
        reason=Reason.CREDENTIAL_EXPIRED,
        hint="use a current key (`lockgate keys create`, `lockgate keys rotate`)",
    )


def _new_key(
    org: str, agent: str, roles: Sequence[str], expires_ms: int
) -> tuple[str, ApiKeyRecord]:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "x")
    record = ApiKeyRecord(
        key_id,
        _hash(secret),
        org,
        agent,
        tuple(sorted(set(roles))),
        int(time.time() * 1000),
        expires_ms=expires_ms,
    )
    return f"lg_{key_id}_{secret}", record


async def create_key(
    store: KeyStore, org: str, agent: str, roles: Sequence[str], *, expires_ms: int = 0
) -> tuple[str, ApiKeyRecord]:
    """Creates a key (expiring at ``expires_ms``, Unix ms; 0: never); returns the full key
    (shown once) and its stored record."""
    key, record = _new_key(org, agent, roles, expires_ms)
    await store.put_key(record)
    return key, record


async def rotate_key(
    store: KeyStore, key_id: str, *, grace: float, expires_ms: int | None = None
) -> tuple[str, ApiKeyRecord, int]:
    """Replaces a key with a new one for the same org, agent and roles; the old key keeps
    working for ``grace`` seconds (then stops, as if expired). The new key expires at
    ``expires_ms`` (None: after as long as the old key's lifetime was; 0: never). Returns
    the new key (shown once), its record, and when the old key stops (Unix ms)."""
    old = await store.get_key(key_id)
    if old is None or old.revoked:
        state = "revoked" if old is not None else "unknown"
        raise NotFound(
            f"no key with id {key_id} to rotate ({state})",
            hint="list the keys with `lockgate keys list`",
        )
    now_ms = int(time.time() * 1000)
    if expires_ms is None:
        expires_ms = now_ms + (old.expires_ms - old.created_ms) if old.expires_ms else 0
    key, record = _new_key(old.org, old.agent, old.roles, expires_ms)
    old_ends = now_ms + int(grace * 1000)
    if not await store.rotate_key(key_id, record, old_ends):
        raise NotFound(f"the key {key_id} was revoked meanwhile", hint="create a new key")
    if old.expires_ms:
        old_ends = min(old_ends, old.expires_ms)
    return key, record, old_ends


async def _refusal(call: Awaitable[object]) -> Unauthenticated:
    try:
        await call
    except Unauthenticated as err:
        return err
    raise AssertionError("a token without a verifier was let in")


class Authenticator:
    """Maps request metadata to a :class:`Principal`, caching key look-ups briefly so that a
    revocation takes effect within seconds without a store read per call. Bearer tokens go
    to ``tokens`` (none: no token is accepted)."""

    def __init__(
        self,
        store: Store,
        *,
        dev_mode: bool,
        identities: ClientIdentities | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._store = store
        self.dev_mode = dev_mode
        self.identities = identities
        """Maps verified client certificates to principals (mTLS; broker.tls)."""
        self.tokens = tokens
        # key -> (cached until, principal or the refusal, the key's expiry in Unix ms or 0)
        self._cache: dict[str, tuple[float, Principal | None, Unauthenticated | None, int]] = {}
        self._dev_checked = time.monotonic()
        # Open streams: one refresher reads the revoked key ids at most once per
        # _WATCH_SECONDS while any stream watches, and wakes them all (no read per stream).
        self._revoked: frozenset[str] = frozenset()
        self._expiry: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._watchers = 0
        self._refresher: asyncio.Task[None] | None = None

    @staticmethod
    def key_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        for name, value in metadata or ():
            text = value.decode() if isinstance(value, bytes) else value
            if name == "authorization":
                scheme, _, token = text.partition(" ")
                if scheme.lower() == "bearer" and token:
                    return token.strip()
                raise Unauthenticated(
                    "the authorization header is not a bearer token",
                    hint="send 'authorization: Bearer <key or token>'",
                )
            if name == "x-api-key":
                return text.strip()
        return None

    async def _dev_mode_ended(self) -> bool:
        """Whether a key was created since the broker started without one (then the open
        dev mode ends for good: anonymous callers are refused from now on)."""
        now = time.monotonic()
        if now - self._dev_checked >= _DEV_CHECK_SECONDS:
            self._dev_checked = now
            await self._read_keys()
        return not self.dev_mode

    async def _read_keys(self) -> None:
        """The one read of the key table: the revoked ids, and the end of the dev mode
        (a key, or the local token signing key, exists now)."""
        keys = await self._store.list_keys()
        self._revoked = frozenset(k.key_id for k in keys if k.revoked)
        self._expiry = {k.key_id: k.expires_ms for k in keys if k.expires_ms}
        if self.dev_mode and (
            any(not k.revoked for k in keys)
            or (self.tokens is not None and self.tokens.has_signing_key())
        ):
            self.dev_mode = False
            log.warning(
                "auth.dev_mode.ended: an API key or a token signing key exists now; "
                "calls without a credential are refused"
            )

    async def _refresh(self) -> None:
        while self._watchers:
            await asyncio.sleep(_WATCH_SECONDS)
            try:
                await self._read_keys()
            except Exception:  # a store hiccup must not end the watch; try next round
                log.exception("auth.watch.failed")
                continue
            async with self._changed:
                self._changed.notify_all()

    def _cut(
        self, key: str | None, token: VerifiedToken | None, certified: bool = False
    ) -> Unauthenticated | None:
        if key is None:
            if self.dev_mode or certified:  # a certificate is checked at the handshake
                return None
            return Unauthenticated(
                "the open dev mode ended: an API key exists now",
                hint="reconnect with 'authorization: Bearer <key>'",
            )
        if token is not None:
            assert self.tokens is not None
            return self.tokens.still_valid(token, time.time())
        key_id = split_key(key)[0]
        if key_id in self._revoked:
            return _revoked()
        expires_ms = self._expiry.get(key_id, 0)
        if expires_ms and time.time() * 1000 >= expires_ms:
            return _expired()
        return None

    async def until_revoked(self, key: str | None, *, certified: bool = False) -> Unauthenticated:
        """Waits while an open stream's credential stays valid; returns the error to end it
        with once a key is revoked or expires (a rotated key: its grace period ends), a token
        expires (or its signing key is withdrawn), or, without a credential, once the dev
        mode ended (a stream of a client certificate without a key is never cut). All open
        streams share one store read per second, so a revocation or a
        rotation reaches them within the documented 5 s."""
        token = None
        if key is not None and is_token(key):
            if self.tokens is None:
                return await _refusal(self.authenticate(key))
            try:
                token = await self.tokens.verify(key)
            except Unauthenticated as ended:  # it ended between the call and its watch
                return ended
        self._watchers += 1
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh())
        try:
            async with self._changed:
                while (err := self._cut(key, token, certified)) is None:
                    if token is None:
                        await self._changed.wait()
                        continue
                    # A token also ends at its exp, between two refreshes.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._changed.wait(), max(0.0, token.expires - time.time())
                        )
            return err
        finally:
            self._watchers -= 1

    async def authenticate(
        self, key: str | None, *, certificate: Principal | None = None
    ) -> Principal:
        """The caller of ``key`` (an API key or a bearer token) and/or a verified client
        ``certificate`` (mTLS).

        A certificate alone is its principal. A credential beside a certificate wins (its
        agent and roles), but only when it belongs to the certificate's org: one of another
        org is refused, so a stolen key cannot leave the org that the certificate proves.
        """
        if certificate is not None:
            if key is None:
                return certificate
            keyed = await self.authenticate(key)
            if keyed.org != certificate.org:
                raise Unauthenticated(
                    f"the credential is of org {keyed.org!r} but the client certificate of "
                    f"org {certificate.org!r}",
                    hint="send a key of the certificate's org, or no key",
                )
            return keyed
        if key is None:
            if self.dev_mode and not await self._dev_mode_ended():
                return DEV_PRINCIPAL
            raise Unauthenticated(
                "no API key or token was sent",
                hint="send 'authorization: Bearer <key>'; create one with `lockgate keys create`",
            )
        if is_token(key):
            return await self._authenticate_token(key)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now and split_key(key)[0] not in self._revoked:
            if hit[1] is None:
                assert hit[2] is not None
                raise _copy(hit[2])  # a fresh one: re-raising one object grows its traceback
            if hit[3] and time.time() * 1000 >= hit[3]:
                raise _expired()
            return hit[1]
        key_id, secret = split_key(key)
        if key_id in self._revoked:
            raise _revoked()
        record = await self._store.get_key(key_id)
        problem: Unauthenticated | None = None
        principal: Principal | None = None
        expires_ms = 0
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            problem = Unauthenticated(
                "the API key is not valid", hint="check the key, or create a new one"
            )
        elif record.revoked:
            problem = _revoked()
        elif record.expires_ms and time.time() * 1000 >= record.expires_ms:
            problem = _expired()
        else:
            principal = Principal(record.org, record.agent, frozenset(record.roles))
            expires_ms = record.expires_ms
            if expires_ms:  # open streams opened with it end then
                self._expiry[key_id] = expires_ms
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + _CACHE_SECONDS, principal, problem, expires_ms)
        if principal is None:
            assert problem is not None
            raise problem
        return principal

    async def _authenticate_token(self, token: str) -> Principal:
        if self.tokens is None:
            raise Unauthenticated(
                "this broker trusts no token issuer",
                reason=Reason.TOKEN_INVALID,
                hint="send an API key, or configure [[auth.issuers]]",
            )
        v = await self.tokens.verify(token)
        return Principal(v.org, v.agent, v.roles)
