"""Lockgate policies: a small language that decides, for every event, allow or deny, and
which limits, routes, tags and duplicate checks apply.

>>> from policy import compile_policies, Request, Principal
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

from .engine import PolicySet, compile_policies, load_policy_dir
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
