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
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar, cast

import asyncpg

from lockgate.broker.config import redact_url
from lockgate.broker.errors import FailedPrecondition, Reason, Unavailable

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "PgDatabase",
    "PgOp",
    "connect_pool",
    "migrate",
    "pg_errors",
    "redact_dsn",
]

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
"""Seconds to open one connection before PostgreSQL counts as unreachable."""

COMMAND_TIMEOUT = 30.0
"""Seconds a statement may take (a migration step excepted) before it fails."""

_STEP_TIMEOUT = 3600.0  # a migration step may rewrite a large table

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
    return redact_url(dsn)


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A connection going back to the pool keeps its session: nothing of ours leaves state
    there (advisory locks are transaction-scoped, no SET, LISTEN or cursor; the message
    logger's staging table is meant to stay), and asyncpg still rolls back a transaction
    left open. Its default reset is one more round trip per use, a few percent of a busy
    cluster node's CPU in py-spy (bench/cluster_bench.py)."""
    return None


async def _opened(pool: asyncpg.Pool) -> None:
    await pool  # a Pool is awaitable: opening it connects min_size connections


async def connect_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    timeout: float = CONNECT_TIMEOUT,
    command_timeout: float = COMMAND_TIMEOUT,
) -> asyncpg.Pool:
    """A pool of connections to ``dsn``, with ``min_size`` opened now: PostgreSQL that does
    not answer within ``timeout`` seconds (or refuses us) is ``Unavailable``
    (STORE_UNAVAILABLE) with one sentence naming the server (never its password). A
    statement bounded by ``command_timeout`` seconds: a server that stops answering (a
    network that drops packets) fails the statement rather than hold its caller."""
    pool = asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        command_timeout=command_timeout,
        reset=_keep_session,
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
                await conn.execute(steps[version], timeout=_STEP_TIMEOUT)
                await conn.execute(
                    "INSERT INTO lockgate_schema (component, version) VALUES ($1, $2) "
                    "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                    component,
                    version + 1,
                )


PgOp = Callable[[asyncpg.Connection], Awaitable[object]]
"""A write, run inside a group commit's transaction; its result is what its future gives."""


class PgDatabase:
    """One component's database: the pool, its migrations at :meth:`open`, and a group
    commit. Writes queued with :meth:`_enqueue` run in call order, whatever accumulated
    while the previous transaction ran in one transaction on one connection (so a burst of
    writes costs one round of commit); reads run on any pooled connection.

    ``pool``: share an open pool (it stays open at :meth:`close`); otherwise :meth:`open`
    connects to ``dsn`` and :meth:`close` closes what it opened.
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        component: str,
        steps: Sequence[str],
        pool: asyncpg.Pool | None = None,
        max_size: int = 10,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        if not dsn and pool is None:
            raise ValueError("a PostgreSQL database needs a dsn or a pool")
        self._dsn = dsn
        self._component = component
        self._steps = tuple(steps)
        self._pool: asyncpg.Pool | None = pool
        self._own_pool = pool is None
        self._max_size = max_size
        self._command_timeout = command_timeout
        self._queue: list[tuple[PgOp, asyncio.Future[object]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._working: list[tuple[PgOp, asyncio.Future[object]]] = []
        """The work of the transaction in progress."""

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the PostgreSQL store is not open"
        return self._pool

    async def open(self) -> None:
        if self._pool is None:
            self._pool = await connect_pool(
                self._dsn, max_size=self._max_size, command_timeout=self._command_timeout
            )
        try:
            await migrate(self._pool, self._component, self._steps)
        except BaseException:
            if self._own_pool:
                await self._pool.close()
                self._pool = None
            raise
        self._writer = asyncio.create_task(
            self._write_loop(), name=f"lockgate-pg-{self._component}-writer"
        )

    async def close(self) -> None:
        """Waits for every queued write (those queued meanwhile too), then closes."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            while self._queue or self._working:
                pending = [f for _, f in (*self._queue, *self._working)]
                await asyncio.gather(*pending, return_exceptions=True)
            # Idle now (nothing queued, no transaction open): cancelling loses nothing.
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _enqueue(self, op: PgOp) -> asyncio.Future[object]:
        """Queues ``op`` for the next group commit; its future gives what ``op`` returned."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self._writer is None:
            fut.set_exception(
                Unavailable("the PostgreSQL store is closed", reason=Reason.STORE_UNAVAILABLE)
            )
            return fut
        self._queue.append((op, fut))
        self._wake.set()
        return fut

    async def _submit(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Queues ``op`` and waits until its group commits: what ``op`` returned."""
        return cast(T, await self._enqueue(op))

    def _before_commit(self) -> None:
        """Runs on the event loop when the writer takes the queued work for a commit."""

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                work, self._queue = self._queue, []
                self._working = work
                self._before_commit()
                try:
                    async with (
                        pg_errors("write"),
                        self.pool.acquire(timeout=self._command_timeout) as conn,
                        conn.transaction(),
                    ):
                        results = [await op(conn) for op, _ in work]
                except Exception as exc:
                    # The whole group failed (one transaction): every writer hears it
                    # (Unavailable, or an op's own error), and the loop goes on with what
                    # is queued next.
                    for _, fut in work:
                        if not fut.done():
                            fut.set_exception(exc)
                    self._working = []
                    continue
                for (_, fut), result in zip(work, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                self._working = []

    async def _read(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with pg_errors(what), self.pool.acquire(timeout=self._command_timeout) as conn:
            return await fn(conn)
