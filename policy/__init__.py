"""Lockgate policies: a small language that decides, for every event, allow or deny, and
which limits, routes, tags and duplicate checks apply.

>>> from lockgate.policy import compile_policies, Request, Principal
>>> ps = compile_policies({"billing.policy": '''
... policy billing on "billing.>" {
...   allow publish when "billing" in principal.roles
... }'''})
>>> d = ps.decide(Request("publish", "billing.eu", Principal("acme", "a7", frozenset({"billing"}))))
>>> d.allowed, d.rule
(True, 'billing.policy:3')

Stages: :mod:`policy.parser` (Lark, ``grammar.lark``) -> :mod:`policy.ast` ->
:mod:`policy.checker` and :mod:`policy.analysis` -> :mod:`policy.compiler` (Python source)
-> :mod:`policy.engine`. See ``policy/README.md`` for the language.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import PolicyError, PolicyErrors
from .model import (
    DEDUP_BY_CONTENT,
    MISSING,
    Decision,
    DedupRule,
    Limit,
    Principal,
    Request,
    Route,
    Tag,
)

if TYPE_CHECKING:
    from .engine import PolicySet, compile_policies
    from .files import load_policy_dir

# The engine imports Lark and RE2; importing ``policy`` for its pure helpers (subjects,
# durations, the model) must not, so the engine's names load on first use.
_LAZY = {"PolicySet": "engine", "compile_policies": "engine", "load_policy_dir": "files"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'policy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lockgate.policy.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEDUP_BY_CONTENT",
    "MISSING",
    "Decision",
    "DedupRule",
    "Limit",
    "PolicyError",
    "PolicyErrors",
    "PolicySet",
    "Principal",
    "Request",
    "Route",
    "Tag",
    "compile_policies",
    "load_policy_dir",
]
