"""Shared fixtures: the real servers of this machine, chosen by one variable each (see
``tests.support.servers``: a missing server skips its tests on a laptop and FAILS them when
``CI=true``). A test that uses a server's fixture is marked with that server's marker, so
``-m "not redis"`` deselects exactly the tests that need Redis.
"""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import AsyncIterator

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


@pytest.fixture
async def pg_fresh_dsn(pg_dsn: str) -> AsyncIterator[str]:
    """A DSN of a new, empty database ``lg_<hex>`` on the ``pg_dsn`` server, dropped (with
    its connections) after the test: every test starts from nothing."""
    import asyncpg

    name = f"lg_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_dsn, timeout=10)
    try:
        # template0: nobody ever connects to it, so concurrent creations never meet
        # "source database is being accessed by other users".
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    finally:
        await admin.close()
    parts = urllib.parse.urlsplit(pg_dsn)
    yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
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
