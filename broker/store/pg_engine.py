"""PostgreSQL for cluster mode: the connection pool, error translation and schema migrations.

Every PostgreSQL component of Lockgate (the metadata store ``component="metadata"``, the
message logger's history ``component="history"``) keeps its schema as an ordered list of
*steps* (SQL text) and calls :func:`migrate` at start. Table ``lockgate_schema`` holds each
component's version (the number of its steps applied). Steps run one transaction each, under
a transaction-scoped advisory lock, so several nodes starting at once apply each step once:
the others wait on the lock and then see the version moved. A database whose version is
above the code's number of steps (written by a newer Lockgate) is refused, not misread.

Example::

    pool = await connect_pool("postgresql://lockgate@db/lockgate")
    await migrate(pool, "metadata", STEPS)
    async with pg_errors("read the keys"):
        rows = await pool.fetch("SELECT * FROM api_keys")
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from lockgate.broker.errors import FailedPrecondition, Reason, Unavailable

__all__ = ["CONNECT_TIMEOUT", "connect_pool", "migrate", "pg_errors", "redact_dsn"]

CONNECT_TIMEOUT = 5.0
"""Seconds to open one connection before PostgreSQL counts as unreachable."""

# One key for every component: migrations are rare and short, and the lock also guards the
# creation of lockgate_schema itself (two CREATE TABLE IF NOT EXISTS at once can collide).
_MIGRATION_LOCK = 0x6C6F636B67617465  # "lockgate"

_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS lockgate_schema (component text PRIMARY KEY, version int NOT NULL)"
)

# What a lost or refused connection raises: the server gone (OSError, a reset), asyncpg's own
# connection errors (InterfaceError: a closed connection or pool), a timeout, or the server's
# refusal (PostgresError: shutting down, too many connections, unknown database).
_BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

# ... and a DSN asyncpg cannot parse (ValueError) when opening.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*_BACKEND_ERRORS, ValueError)


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password, for messages and logs."""
    try:
        parts = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "the configured PostgreSQL"
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))


@asynccontextmanager
async def pg_errors(what: str) -> AsyncIterator[None]:
    """Translates PostgreSQL failures inside the block into ``Unavailable``
    (STORE_UNAVAILABLE): "the PostgreSQL store failed to <what>: <cause>"."""
    try:
        yield
    except _BACKEND_ERRORS as exc:
        raise Unavailable(
            f"the PostgreSQL store failed to {what}: {exc or type(exc).__name__}",
            reason=Reason.STORE_UNAVAILABLE,
            hint="check that PostgreSQL is running and reachable",
        ) from exc


async def _opened(pool: asyncpg.Pool) -> None:
    await pool  # a Pool is awaitable: opening it connects min_size connections


async def connect_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = CONNECT_TIMEOUT,
) -> asyncpg.Pool:
    """A pool of connections to ``dsn``, with ``min_size`` opened now: PostgreSQL that does
    not answer within ``timeout`` seconds (or refuses us) is ``Unavailable``
    (STORE_UNAVAILABLE) with one sentence naming the server (never its password)."""
    pool = asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=60
    )
    try:
        # The connect timeout bounds each connection; this bounds the whole opening (a
        # server that accepts TCP and never answers the startup message).
        await asyncio.wait_for(_opened(pool), timeout * 2)
    except _CONNECT_ERRORS as exc:
        pool.terminate()
        cause = str(exc) or ("no answer" if isinstance(exc, TimeoutError) else type(exc).__name__)
        raise Unavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {cause}",
            reason=Reason.STORE_UNAVAILABLE,
            hint="check that PostgreSQL is running and that --store names it",
        ) from exc
    except BaseException:
        pool.terminate()
        raise
    return pool


async def migrate(pool: asyncpg.Pool, component: str, steps: Sequence[str]) -> None:
    """Brings ``component``'s schema to ``len(steps)``: applies ``steps[version:]``, each in
    its own transaction under the migration lock, recording the new version with it.

    Idempotent, and safe to call from many nodes at once. Raises ``FailedPrecondition``
    (DATA_DIR_UNUSABLE) when the database holds a newer version than ``steps`` knows.
    """
    async with pg_errors(f"migrate the {component} schema"), pool.acquire() as conn:
        while True:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                await conn.execute(_SCHEMA_TABLE)
                version = await conn.fetchval(
                    "SELECT version FROM lockgate_schema WHERE component = $1", component
                )
                version = int(version or 0)
                if version > len(steps):
                    raise FailedPrecondition(
                        f"the PostgreSQL store's {component} schema is version {version}, "
                        f"newer than this Lockgate understands ({len(steps)})",
                        reason=Reason.DATA_DIR_UNUSABLE,
                        hint="run the Lockgate version that wrote it, or point --store at "
                        "another database",
                    )
                if version == len(steps):
                    return
                await conn.execute(steps[version])
                await conn.execute(
                    "INSERT INTO lockgate_schema (component, version) VALUES ($1, $2) "
                    "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                    component,
                    version + 1,
                )
