"""Fixtures for the gateway tests: an in-process broker with its LocalAPI, and an HTTP
gateway on a loopback port. Helpers live in ``tests.gateways.gw_kit``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from tests.gateways.gw_kit import Local, local_broker


@pytest_asyncio.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    """A dev-mode broker in this process (webhook_allow_private on), its LocalAPI, and an
    HTTP+WebSocket gateway on 127.0.0.1."""
    async with local_broker(tmp_path) as env:
        yield env
