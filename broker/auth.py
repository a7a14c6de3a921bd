"""API keys and principals.

A key looks like ``lg_<key id>_<secret>``. The store keeps only the SHA-256 of the secret
(the secret has 256 bits of entropy, so a slow hash buys nothing), so a key is shown once,
when it is created. With no key configured the broker runs in an open dev mode on loopback
only, where callers without a key act as ``default/anonymous`` with every role. The dev mode
ends by itself once a key exists (``lockgate keys create`` beside a running broker): the
broker looks at most once a second while anonymous calls arrive, so no restart is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.broker.errors import Unauthenticated
from lockgate.broker.store import ApiKeyRecord, Store

if TYPE_CHECKING:
    from lockgate.broker.tls import ClientIdentities

__all__ = ["DEV_PRINCIPAL", "Authenticator", "Principal", "create_key", "split_key"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: their org, their agent name and their roles."""

    org: str
    agent: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


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
            "the API key is malformed",
            hint="keys look like lg_<id>_<secret>; create one with `lockgate keys create`",
        )
    return parts[1], parts[2]


async def create_key(
    store: Store, org: str, agent: str, roles: Sequence[str]
) -> tuple[str, ApiKeyRecord]:
    """Creates a key; returns the full key (shown once) and its stored record."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "x")
    record = ApiKeyRecord(
        key_id, _hash(secret), org, agent, tuple(sorted(set(roles))), int(time.time() * 1000)
    )
    await store.put_key(record)
    return f"lg_{key_id}_{secret}", record


class Authenticator:
    """Maps request metadata to a :class:`Principal`, caching key look-ups briefly so that a
    revocation takes effect within seconds without a store read per call."""

    def __init__(
        self, store: Store, *, dev_mode: bool, identities: ClientIdentities | None = None
    ) -> None:
        self._store = store
        self.dev_mode = dev_mode
        self.identities = identities
        """Maps verified client certificates to principals (mTLS; broker.tls)."""
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}
        self._dev_checked = time.monotonic()
        # Open streams: one refresher reads the revoked key ids at most once per
        # _WATCH_SECONDS while any stream watches, and wakes them all (no read per stream).
        self._revoked: frozenset[str] = frozenset()
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
                    hint="send 'authorization: Bearer <key>'",
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
        """The one read of the key table: the revoked ids, and the end of the dev mode."""
        keys = await self._store.list_keys()
        self._revoked = frozenset(k.key_id for k in keys if k.revoked)
        if self.dev_mode and any(not k.revoked for k in keys):
            self.dev_mode = False
            log.warning(
                "auth.dev_mode.ended: an API key exists now; calls without a key are refused"
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

    def _cut(self, key: str | None, certified: bool = False) -> Unauthenticated | None:
        if key is None:
            if self.dev_mode or certified:  # a certificate is checked at the handshake
                return None
            return Unauthenticated(
                "the open dev mode ended: an API key exists now",
                hint="reconnect with 'authorization: Bearer <key>'",
            )
        if split_key(key)[0] in self._revoked:
            return Unauthenticated(
                "the API key was revoked", hint="reconnect with a key that is not revoked"
            )
        return None

    async def until_revoked(self, key: str | None, *, certified: bool = False) -> Unauthenticated:
        """Waits while an open stream's key stays valid; returns the error to end it with once
        the key is revoked (or, without a key, once the dev mode ended; a stream of a client
        certificate without a key is never cut). All open streams share one store read per
        second, so a revocation reaches them within the documented 5 s."""
        self._watchers += 1
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh())
        try:
            async with self._changed:
                while (err := self._cut(key, certified)) is None:
                    await self._changed.wait()
            return err
        finally:
            self._watchers -= 1

    async def authenticate(
        self, key: str | None, *, certificate: Principal | None = None
    ) -> Principal:
        """The caller of ``key`` and/or a verified client ``certificate`` (mTLS).

        A certificate alone is its principal. A key beside a certificate wins (its agent and
        roles), but only when it belongs to the certificate's org: a key of another org is
        refused, so a stolen key cannot leave the org that the certificate proves.
        """
        if certificate is not None:
            if key is None:
                return certificate
            keyed = await self.authenticate(key)
            if keyed.org != certificate.org:
                raise Unauthenticated(
                    f"the API key is of org {keyed.org!r} but the client certificate of "
                    f"org {certificate.org!r}",
                    hint="send a key of the certificate's org, or no key",
                )
            return keyed
        if key is None:
            if self.dev_mode and not await self._dev_mode_ended():
                return DEV_PRINCIPAL
            raise Unauthenticated(
                "no API key was sent",
                hint="send 'authorization: Bearer <key>'; create one with `lockgate keys create`",
            )
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now and split_key(key)[0] not in self._revoked:
            if hit[1] is None:
                raise Unauthenticated(hit[2], hint="check the key, or create a new one")
            return hit[1]
        key_id, secret = split_key(key)
        if key_id in self._revoked:
            raise Unauthenticated(
                "the API key was revoked", hint="check the key, or create a new one"
            )
        record = await self._store.get_key(key_id)
        problem = ""
        principal: Principal | None = None
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            problem = "the API key is not valid"
        elif record.revoked:
            problem = "the API key was revoked"
        else:
            principal = Principal(record.org, record.agent, frozenset(record.roles))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + _CACHE_SECONDS, principal, problem)
        if principal is None:
            raise Unauthenticated(problem, hint="check the key, or create a new one")
        return principal
