"""Command-line tools some tests need (helm, nats-server), with the rule of the servers: a
missing tool skips its tests on a laptop and FAILS them when ``CI=true`` (``.ci/run``
installs them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = ["require_tool"]


def require_tool(name: str, variable: str, env: Mapping[str, str] = os.environ) -> str:
    """The path of ``name`` (from ``variable``, PATH, the venv or /usr/sbin), or skip/fail."""
    candidates = [env.get(variable, ""), shutil.which(name) or ""]
    candidates += [str(Path(".venv/bin") / name), f"/usr/sbin/{name}"]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    reason = f"{name} is not installed (put it on PATH or set {variable})"
    if env.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true: .ci/run must install it")
    pytest.skip(reason)
