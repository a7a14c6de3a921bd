"""The examples in the policy package's docstrings run, so the docs cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

from lockgate import policy

MODULES = [policy.__name__] + [
    f"{policy.__name__}.{m.name}" for m in pkgutil.iter_modules(policy.__path__)
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_the_docstring_examples_are_found() -> None:
    # A module without examples passes the test above: make sure the run is not empty.
    attempted = sum(
        doctest.testmod(importlib.import_module(n), optionflags=doctest.ELLIPSIS).attempted
        for n in MODULES
    )
    assert attempted >= 10, attempted


def test_the_readme_policy_is_canonical_and_clean() -> None:
    import re
    from pathlib import Path

    from tests.policy.policy_helpers import compile_policies, format_source

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    found = re.search(r"```\n(# billing\.policy\n.*?)```", readme, re.S)
    assert found is not None
    text = found.group(1)
    assert format_source(text) == text  # `lockgate policy fmt --check` passes
    assert compile_policies({"billing.policy": text}).warnings == ()
