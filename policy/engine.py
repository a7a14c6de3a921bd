"""``PolicySet``: compiled policies indexed by subject pattern; ``decide`` is pure and
thread-safe.

Combining: a subject no policy covers is allowed (effect ``default``). When policies cover it,
every deny of every covering policy is tried first (deny overrides allow), then every
require, then the allows; if no allow fires the action is denied (effect ``default``). Once
allowed, the limits, routes, tags and duplicate rules of every covering policy apply.

A subscription to a wildcard pattern reaches every policy whose patterns overlap it (``>``
reaches ``billing.>``), and needs each of them to allow it on its own: otherwise a ``>``
subscriber would receive the events of policies that never saw its subscription.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from . import ast as A
from .analysis import check_policy, check_set
from .checker import Checker
from .compiler import CompiledPolicy, CompiledRule, compile_module
from .errors import PolicyError, PolicyErrors
from .inputs import EventInputs, event_inputs
from .model import Decision, DedupRule, Limit, Request, Route, Tag
from .parser import PolicyParser
from .runtime import no_rule as _no_rule
from .runtime import with_effects as _with
from .subjects import PatternTrie, is_literal, overlaps

__all__ = ["MAX_SOURCE_BYTES", "PolicySet", "compile_policies"]

#: Largest accepted policy file.
MAX_SOURCE_BYTES = 1 << 20
_CACHE_SIZE = 8192

Decide = Callable[[Request], Decision]
_DEFAULT_ALLOW = Decision(True, "default", "no policy covers this subject", "")


def _const(d: Decision) -> Decide:
    return lambda req: d


def _unknown(req: Request) -> Decision:
    return Decision(False, "deny", f"unknown action {req.action!r}", "")


_NO_POLICY: Mapping[str, Decide] = {a: _const(_DEFAULT_ALLOW) for a in A.ACTIONS}


def _combine(pols: Sequence[CompiledPolicy], action: str) -> Decide:
    st = [p.stages() for p in pols]
    denies = tuple(s.deny[action] for s in st if action in s.deny)
    reqs = tuple(s.require[action] for s in st if action in s.require)
    allows = tuple(s.allow[action] for s in st if action in s.allow)
    fxs = tuple(s.fx[action] for s in st if action in s.fx)

    def decide(req: Request) -> Decision:
        for f in denies:
            d = f(req)
            if d is not None:
                return d
        for f in reqs:
            d = f(req)
            if d is not None:
                return d
        ok = None
        for f in allows:
            ok = f(req)
            if ok is not None:
                break
        if ok is None:
            return _no_rule(req)
        if not fxs:
            return ok
        lim: list[Limit] = []
        rt: list[Route] = []
        tg: list[Tag] = []
        dd: list[DedupRule] = []
        for fx in fxs:
            d = fx(req, lim, rt, tg, dd)
            if d is not None:
                return d
        return _with(ok, lim, rt, tg, dd) if lim or rt or tg or dd else ok

    return decide


class PolicySet:
    """A loaded, checked and compiled set of policies.

    >>> from lockgate.policy import Principal, Request, compile_policies
    >>> ps = compile_policies({"a.policy": 'policy a on "orders.>" { allow publish }'})
    >>> ps.decide(Request("publish", "orders.eu", Principal("acme", "bot", frozenset()))).allowed
    True
    """

    __slots__ = (
        "_cache",
        "_combos",
        "_inputs",
        "_policies",
        "_reach",
        "_reads",
        "_sources",
        "_trie",
        "generated",
        "version",
        "warnings",
    )

    def __init__(
        self,
        policies: Sequence[CompiledPolicy],
        sources: Mapping[str, str],
        warnings: Sequence[PolicyError] = (),
        generated: str = "",
    ) -> None:
        self._policies = tuple(policies)
        self._sources: Mapping[str, str] = MappingProxyType(dict(sources))
        self._trie = PatternTrie((pat, i) for i, p in enumerate(policies) for pat in p.patterns)
        self._cache: dict[str, Mapping[str, Decide]] = {}
        self._combos: dict[tuple[int, ...], Mapping[str, Decide]] = {(): _NO_POLICY}
        self._inputs: dict[tuple[int, ...], EventInputs] = {}
        # What each policy reads, found once here (a compile runs off the broker's loop): a
        # walk of a 10,000-rule policy's tree takes 0.4 s, and each new subject's set of
        # covering policies asked for it again on the loop.
        self._reads = tuple(event_inputs([p.ast]) for p in self._policies)
        self._reach: dict[str, tuple[int, ...]] = {}
        self.warnings: tuple[PolicyError, ...] = tuple(warnings)
        self.generated = generated
        digest = hashlib.sha256()
        for name in sorted(sources):
            digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
        self.version = digest.hexdigest()[:12]

    @classmethod
    def empty(cls) -> PolicySet:
        """A set with no policies: every action is allowed by default."""
        return cls((), {})

    @property
    def sources(self) -> Mapping[str, str]:
        """File name -> policy text."""
        return self._sources

    @property
    def policy_names(self) -> tuple[str, ...]:
        """Names of the policies, in load order."""
        return tuple(p.name for p in self._policies)

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """Every rule, in load order."""
        return tuple(r for p in self._policies for r in p.stages().rules)

    def decide(self, request: Request) -> Decision:
        """The decision on one request (pure, thread-safe)."""
        if request.action == "subscribe" and not is_literal(request.subject):
            return self._decide_wildcard(request)
        entry = self._cache.get(request.subject)
        if entry is None:
            entry = self._entry(request.subject)
        fn = entry.get(request.action)
        if fn is None:
            return _unknown(request)
        return fn(request)

    def _reached(self, pattern: str) -> tuple[int, ...]:
        """The policies whose patterns overlap a subscription ``pattern`` (cached)."""
        hit = self._reach.get(pattern)
        if hit is None:
            hit = tuple(
                i
                for i, p in enumerate(self._policies)
                if any(overlaps(pattern, q) for q in p.patterns)
            )
            if len(self._reach) < _CACHE_SIZE:
                self._reach[pattern] = hit
        return hit

    def _decide_wildcard(self, request: Request) -> Decision:
        key = self._reached(request.subject)
        for i in key:
            d = self._policies[i].fused["subscribe"](request)
            if not d.allowed:
                return d
        return self._combo(key)["subscribe"](request)

    def _combo(self, key: tuple[int, ...]) -> Mapping[str, Decide]:
        entry = self._combos.get(key)
        if entry is None:
            pols = [self._policies[i] for i in key]
            if len(pols) == 1:
                entry = dict(pols[0].fused)
            else:
                entry = {a: _combine(pols, a) for a in A.ACTIONS}
            if len(self._combos) < _CACHE_SIZE:
                self._combos[key] = entry
        return entry

    def _entry(self, subject: str) -> Mapping[str, Decide]:
        entry = self._combo(self._trie.lookup(subject))
        cache = self._cache
        if len(cache) >= _CACHE_SIZE:
            # FIFO eviction; a race with another thread at worst evicts twice
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                del cache[next(iter(cache))]
        cache[subject] = entry
        return entry

    def event_inputs(self, subject: str) -> EventInputs:
        """What the policies covering ``subject`` read of an event (see ``policy.inputs``)."""
        key = self._trie.lookup(subject)
        hit = self._inputs.get(key)
        if hit is None:
            reads = [self._reads[i] for i in key]
            names = tuple(sorted({n for r in reads for n in r.names}))
            hit = EventInputs(names, any(r.data for r in reads))
            if len(self._inputs) < _CACHE_SIZE:
                self._inputs[key] = hit
        return hit

    def matching(self, subject: str) -> tuple[str, ...]:
        """Names of the policies whose patterns match ``subject``."""
        return tuple(self._policies[i].name for i in self._trie.lookup(subject))

    def explain(self, request: Request) -> Decision:
        """Like :meth:`decide`, with ``trace`` naming every rule tried and its outcome."""
        from .explain import explain

        if request.action == "subscribe" and not is_literal(request.subject):
            key = self._reached(request.subject)
            for i in key:  # as decide: each reached policy must allow on its own
                d = explain([self._policies[i]], request)
                if not d.allowed:
                    return d
        else:
            key = self._trie.lookup(request.subject)
        return explain([self._policies[i] for i in key], request)


def compile_policies(sources: Mapping[str, str], parser: PolicyParser | None = None) -> PolicySet:
    """Parse (with ``parser``, or a new one), check and compile ``{file name: policy text}``;
    raise :class:`PolicyErrors`. Pure: no files (see :mod:`policy.files`), no global state.

    >>> compile_policies({"x.policy": "policy x on \\"a.>\\" { allow publish }"}).version
    ... # doctest: +ELLIPSIS
    '...'
    """
    parser = parser or PolicyParser()
    found: list[PolicyError] = []
    policies: list[A.Policy] = []
    for file in sorted(sources):
        text = sources[file]
        if len(text.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
            found.append(
                PolicyError(
                    file,
                    1,
                    1,
                    f"file is larger than {MAX_SOURCE_BYTES} bytes",
                    "split it into several files",
                )
            )
            continue
        try:
            parsed = parser.parse(text, file)
        except PolicyError as exc:
            found.append(exc)
            continue
        ck = Checker(file, text)
        for p in parsed:
            check_policy(ck, p)
        found.extend(ck.errors)
        policies.extend(parsed)
    if not any(e.severity == "error" for e in found):
        found.extend(check_set(policies, sources))
    errors = [e for e in found if e.severity == "error"]
    warnings = [e for e in found if e.severity != "error"]
    if errors:
        raise PolicyErrors(errors, warnings)
    compiled, generated = compile_module(policies)
    return PolicySet(compiled, sources, warnings, generated)
