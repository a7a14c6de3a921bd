"""Shared fixtures: the real servers of this machine, chosen by one variable each (see
``tests.support.servers``: a missing server skips its tests on a laptop and FAILS them when
``CI=true``). A test that uses a server's fixture is marked with that server's marker, so
``-m "not redis"`` deselects exactly the tests that need Redis.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.servers import SERVERS, require_server

_PG, _REDIS, _NATS = SERVERS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for server in SERVERS:
            if server.fixture in names:
                item.add_marker(server.marker)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return require_server(_PG)


def _database_dsn(dsn: str, name: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path="/" + name))


@pytest.fixture(scope="session")
def _pg_spare_databases(pg_dsn: str) -> Iterator[list[str]]:
    """Databases ``lg_<hex>`` of this test session, emptied and free for the next test;
    dropped (WITH (FORCE)) when the session ends."""
    spare: list[str] = []
    yield spare

    async def drop() -> None:
        import asyncpg

        admin = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            for name in spare:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

    if spare:
        asyncio.run(drop())


async def _emptied(pg_dsn: str, name: str) -> bool:
    """Returns database ``name`` to the state CREATE DATABASE left it in: its connections
    ended, every schema a test made dropped, ``public`` anew. False when that failed."""
    import asyncpg

    try:
        admin = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        finally:
            await admin.close()
        conn = await asyncpg.connect(_database_dsn(pg_dsn, name), timeout=10)
        try:
            schemas = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                "AND nspname <> 'information_schema'"
            )
            async with conn.transaction():
                for row in schemas:
                    await conn.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
                await conn.execute("CREATE SCHEMA public")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


@pytest.fixture
async def pg_fresh_dsn(pg_dsn: str, _pg_spare_databases: list[str]) -> AsyncIterator[str]:
    """A DSN of an empty database ``lg_<hex>`` on the ``pg_dsn`` server, for this test
    alone: every test starts from nothing.

    Creating a database costs about a second here (PostgreSQL copies and syncs its
    template), so a database a test is done with is emptied (its connections ended, its
    schemas dropped) and handed to the next test of the session instead of being dropped;
    the session drops them all WITH (FORCE) at its end.
    """
    import asyncpg

    if _pg_spare_databases:
        name = _pg_spare_databases.pop()
    else:
        name = f"lg_{secrets.token_hex(6)}"
        admin = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            # template0: nobody ever connects to it, so concurrent creations never meet
            # "source database is being accessed by other users".
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        finally:
            await admin.close()
    yield _database_dsn(pg_dsn, name)
    if await _emptied(pg_dsn, name):
        _pg_spare_databases.append(name)
        return
    admin = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_server(_REDIS)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return require_server(_NATS)
