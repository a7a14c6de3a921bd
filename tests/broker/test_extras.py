"""The one map from optional modules to extras, and the error that names the extra."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lockgate.broker.errors import Reason
from lockgate.broker.extras import EXTRAS, extra_for, missing_extra

ROOT = Path(__file__).resolve().parents[2]


def test_every_extra_named_exists_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS.values()) <= set(project["optional-dependencies"])


def test_a_missing_optional_module_names_its_extra() -> None:
    assert extra_for("redis.asyncio") == "redis" and extra_for("json") is None
    err = missing_extra("the Redis limiter", ModuleNotFoundError(name="redis.asyncio"))
    assert (
        err.message
        == "the Redis limiter needs the optional package 'redis', which is not installed"
    )
    assert err.reason == Reason.MISSING_EXTRA and err.hint == "pip install 'lockgate[redis]'"


def test_a_missing_module_of_no_extra_is_a_bug_and_raised_again() -> None:
    bug = ModuleNotFoundError(name="broker.nonexistent")
    with pytest.raises(ModuleNotFoundError) as raised:
        missing_extra("the broker", bug)
    assert raised.value is bug
