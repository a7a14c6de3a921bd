"""Shared fixtures: the real servers of this machine, chosen by one variable each (see
``tests.support.servers``: a missing server skips its tests on a laptop and FAILS them when
``CI=true``). A test that uses a server's fixture is marked with that server's marker, so
``-m "not redis"`` deselects exactly the tests that need Redis.
"""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_server(_REDIS)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return require_server(_NATS)
