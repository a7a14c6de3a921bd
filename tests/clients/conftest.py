"""Fixtures for the client tests: a fake broker in-process, and (when available) a real one."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The repository root, so `clients` and `broker.v1` import without an installed package.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from fake_broker import FakeBroker  # noqa: E402


@pytest.fixture
async def fake() -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
