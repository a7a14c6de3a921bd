"""Shared fixtures: the real servers of this machine, chosen by one variable each.

``LOCKGATE_TEST_PG_DSN``, ``LOCKGATE_TEST_REDIS_URL`` and ``LOCKGATE_TEST_NATS_URL`` name an
existing server (defaults: the local ones). A missing server skips its tests on a laptop
and FAILS them when ``CI=true``, so a missing install step cannot pass silently.
"""

from __future__ import annotations

import os
import socket
import urllib.parse

import pytest

PG_DSN = os.environ.get("LOCKGATE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("LOCKGATE_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str, default_port: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_server(name: str, url: str, default_port: int) -> str:
    if _reachable(url, default_port):
        return url
    reason = f"{name} is not reachable at {url}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: integration servers must be installed)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return require_server("PostgreSQL", PG_DSN, 5432)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_server("Redis", REDIS_URL, 6379)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return require_server("NATS", NATS_URL, 4222)
