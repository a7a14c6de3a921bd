"""Fixtures for the broker tests: a real ``lockgate serve`` process and raw gRPC stubs.

``broker`` is one dev-mode broker (no API keys: every caller is ``default/anonymous`` with
the admin role) shared by the whole session; tests that share it use distinct subjects
(``unique()``) and durable names, so they cannot see each other's events. Tests that need
flags, keys, or that kill/restart a broker start their own with ``run_broker``.

The e2e modules run on the session event loop (``pytest.mark.asyncio(loop_scope="session")``)
because the shared broker process and its output drain task live on it.

Helpers live in ``tests.broker.e2e_kit``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from tests.broker.e2e_kit import Stubs


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def broker() -> AsyncIterator[RunningBroker]:
    """One dev-mode broker for every test that does not disturb it."""
    async with run_broker() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="session")
async def stubs(broker: RunningBroker) -> AsyncIterator[Stubs]:
    """Broker and admin stubs on a fresh channel to the shared broker."""
    async with grpc.aio.insecure_channel(broker.target) as channel:
        yield Stubs(channel)
