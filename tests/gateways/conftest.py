"""Fixtures for the gateway tests: an in-process broker with its LocalAPI, and an HTTP
gateway on a loopback port. Helpers live in ``gw_kit`` (a uniquely named module)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

# ``tests/gateways`` and ``tests/policy`` share names with packages: the repository root
# goes first on sys.path (as tests/policy does), and namespace stand-ins are dropped.
_HERE = str(Path(__file__).resolve().parent)
_ROOT = str(Path(__file__).resolve().parents[2])
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
if _ROOT in sys.path:
    sys.path.remove(_ROOT)
sys.path.insert(0, _ROOT)
for _name in ("policy", "gateways"):
    _mod = sys.modules.get(_name)
    if _mod is not None and getattr(_mod, "__file__", None) is None:
        del sys.modules[_name]

from gw_kit import Local, local_broker  # noqa: E402


@pytest_asyncio.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    """A dev-mode broker in this process (webhook_allow_private on), its LocalAPI, and an
    HTTP+WebSocket gateway on 127.0.0.1."""
    async with local_broker(tmp_path) as env:
        yield env
