"""The integration servers of the test run, one environment variable each, and the one rule
for a missing one: skip with the reason on a laptop, FAIL when ``CI=true`` (a missing install
step must not pass silently).

``LOCKGATE_TEST_PG_DSN``, ``LOCKGATE_TEST_REDIS_URL`` and ``LOCKGATE_TEST_NATS_URL`` name an
existing server; the defaults are the local ones.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

__all__ = ["SERVERS", "Server", "require_server"]


@dataclass(frozen=True)
class Server:
    """An integration server: its pytest marker and fixture, variable, default and port."""

    name: str
    marker: str
    fixture: str
    variable: str
    default: str
    port: int

    def url(self, env: Mapping[str, str] = os.environ) -> str:
        return env.get(self.variable) or self.default


SERVERS = (
    Server(
        "PostgreSQL",
        "postgres",
        "pg_dsn",
        "LOCKGATE_TEST_PG_DSN",
        "postgresql://postgres@127.0.0.1:5432/test",
        5432,
    ),
    Server(
        "Redis", "redis", "redis_url", "LOCKGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0", 6379
    ),
    Server("NATS", "nats", "nats_url", "LOCKGATE_TEST_NATS_URL", "nats://127.0.0.1:4222", 4222),
)


def _reachable(url: str, default_port: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except (OSError, ValueError):
        return False


def require_server(server: Server, env: Mapping[str, str] = os.environ) -> str:
    """The server's URL when it answers; otherwise skips the test, or fails it under CI."""
    url = server.url(env)
    if _reachable(url, server.port):
        return url
    reason = f"{server.name} is not reachable at {url} (set {server.variable})"
    if env.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true: integration servers must be installed")
    pytest.skip(reason)
