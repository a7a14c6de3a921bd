"""Fuzz the parser, checker and compiler: every input either loads or fails with PolicyErrors
whose every error has a position; nothing crashes or hangs; what loads decides without raising.

Run as a script for a long run (default 100,000 inputs)::

    .venv/bin/python -m tests.policy.fuzz_policy [COUNT] [SEED]

``test_fuzz.py`` runs the same property through hypothesis in the normal suite.
"""

from __future__ import annotations

import random
import sys
import time

from lockgate.policy import MISSING, Decision, PolicyErrors, Principal, Request
from lockgate.policy.errors import PolicyError
from lockgate.policy.fmt import shape
from tests.policy.policy_helpers import compile_policies, format_source, parse

VOCAB = [
    "policy",
    "on",
    "{",
    "}",
    "allow",
    "deny",
    "require",
    "limit",
    "route",
    "reject",
    "duplicates",
    "of",
    "within",
    "tag",
    "when",
    "unless",
    "because",
    "per",
    "burst",
    "by",
    "copy",
    "redirect",
    "to",
    "publish",
    "subscribe",
    "request",
    ",",
    "and",
    "or",
    "not",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "has_any",
    "has_all",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "(",
    ")",
    "[",
    "]",
    ".",
    "=",
    "+",
    "-",
    "true",
    "false",
    "second",
    "minutes",
    "hour",
    "event",
    "principal",
    "subject",
    "action",
    "now",
    "data",
    "type",
    "roles",
    "attrs",
    "org",
    "exists",
    "size",
    "timestamp",
    "10m",
    "2h",
    "0",
    "1",
    "10000",
    "-3",
    "2.5",
    '"billing.>"',
    '"a.*"',
    '"x"',
    '"payment.*"',
    '"(a)\\\\1"',
    '""',
    "#c\n",
    "\n",
    "p",
    "x",
    "subject[1]",
    "event.data.amount",
    "principal.roles",
    "$",
    "@",
    "'",
    '"\\q"',
    "\\",
    "\t",
    "event.type",
    '"2024-01-01T00:00:00Z"',
    "9" * 30,
    '"\\ud800"',
    "1e5",
    "0.5",
]
SEED_POLICY = """policy billing on "billing.>" {
  allow publish when "billing" in principal.roles
  allow subscribe when principal.roles has_any ["finance", "audit"]
  deny publish when event.type == "payment.failed" and event.data.amount > 10000
      unless "finance" in principal.roles because "large"
  require event.datacontenttype == "application/json" because "json"
  limit publish 100 per second burst 200 by principal.agent
  route copy to "audit.billing" when event.type matches "payment.*"
  reject duplicates of event.data.invoice_id within 10 minutes
  tag "priority" = "high" when subject[1] == "eu" and now > event.time - 5m
}
"""
ATOMS = [
    "event.type",
    "event.data.amount",
    "event.data.a.b[0]",
    "event.time",
    "event.ext",
    "principal.roles",
    "principal.org",
    "principal.attrs.x",
    "subject",
    "subject[1]",
    "action",
    "now",
    '"s"',
    "5",
    "-2.5",
    "10m",
    "true",
    '["a", "b"]',
    "[1, 2]",
    'timestamp("2024-01-01T00:00:00Z")',
    "size(event.type)",
    "exists(event.data.x)",
]
OPS = [
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "has_any",
    "has_all",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "+",
    "-",
    "and",
    "or",
]
REQUESTS = [
    Request(
        "publish",
        "billing.eu",
        Principal("acme", "a", frozenset({"billing"})),
        {"type": "payment.failed", "time": "2024-01-01T00:00:00Z", "ext": 3},
        {"amount": 20000, "a": {"b": ["x"]}},
    ),
    Request(
        "subscribe",
        "billing.eu.x",
        Principal("o", "b", frozenset(), {"x": "1"}),
        {"type": 5},
        [1, 2],
    ),
    Request("request", "x", Principal("o", "c"), None, None, b"{bad"),
]


def token_soup(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 40)))


def mutate(rng: random.Random) -> str:
    toks = SEED_POLICY.split(" ")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(toks))
        op = rng.random()
        if op < 0.33:
            del toks[i]
        elif op < 0.66:
            toks.insert(i, rng.choice(VOCAB))
        else:
            toks[i] = rng.choice(VOCAB)
    return " ".join(toks)


def random_text(rng: random.Random) -> str:
    alphabet = 'abcz.*>{}()[]"\\#=<!-+,_ \n\t0129$é\x00'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))


def expr(rng: random.Random, depth: int = 0) -> str:
    if depth > 4 or rng.random() < 0.3:
        return rng.choice(ATOMS)
    r = rng.random()
    if r < 0.15:
        return f"not {expr(rng, depth + 1)}"
    if r < 0.3:
        return f"({expr(rng, depth + 1)})"
    return f"{expr(rng, depth + 1)} {rng.choice(OPS)} {expr(rng, depth + 1)}"


def random_policy(rng: random.Random) -> str:
    kind = rng.choice(
        ["allow publish when", "deny publish when", "require", "allow subscribe when"]
    )
    extra = rng.choice(
        [
            "",
            "  allow publish\n",
            f'  tag "t" = {rng.choice(ATOMS)}\n',
            f"  limit publish 5 per second by {rng.choice(ATOMS)}\n",
        ]
    )
    return f'policy p on "billing.>" {{\n  {kind} {expr(rng)}\n{extra}}}\n'


TYPED = [
    'event.type == "payment.failed"',
    "event.data.amount > 10000",
    'principal.roles has_any ["a"]',
    '"billing" in principal.roles',
    'subject[1] starts_with "e"',
    "event.time < now - 5m",
    "size(event.type) >= 1",
    "event.ext != 3",
    'event.data.a.b[0] contains "x"',
    "exists(event.data.x)",
    'event.type matches "^pay.*"',
    'principal.attrs.x == "1"',
    'action == "publish"',
    "event.data.flag",
    "event.data.amount + 1 > event.data.n - 2",
    'principal.roles has_all ["a", "b"]',
    'event.source ends_with ":x"',
    "true",
]


def cond(rng: random.Random, depth: int = 0) -> str:
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(TYPED)
    r = rng.random()
    if r < 0.2:
        return f"not ({cond(rng, depth + 1)})"
    joiner = " and " if r < 0.6 else " or "
    return "(" + joiner.join(cond(rng, depth + 1) for _ in range(rng.randint(2, 3))) + ")"


def typed_policy(rng: random.Random) -> str:
    """Well-typed policies, so the compiler and the engine see real work."""
    acts = rng.choice(["publish", "subscribe", "publish, request", "subscribe, request"])
    key = rng.choice(["principal.agent", "event.data.amount"])
    value = rng.choice(["event.type", '"v"', "event.data.amount"])
    mode = rng.choice(["copy", "redirect"])
    rules = [
        f"allow {acts} when {cond(rng)}",
        f'deny {acts} when {cond(rng)} unless {cond(rng)} because "r"',
        f"require {cond(rng)}",
        f"limit {acts} 5 per minute burst 9 by {key}",
        f'tag "t{rng.randint(0, 9)}" = {value}',
        f'route {mode} to "audit.x" when {cond(rng)}',
        f"reject duplicates of event.data.id within {rng.randint(1, 60)}s when {cond(rng)}",
        f"allow {acts}",
    ]
    body = "\n  ".join(rng.sample(rules, rng.randint(1, len(rules))))
    return f'policy p on "billing.>", "x" {{\n  {body}\n}}\n'


GENERATORS = [token_soup, mutate, random_text, random_policy, typed_policy]


def check_one(text: str) -> str:
    """Assert the property for one input; returns "ok", "error" (PolicyErrors) or "syntax"."""
    try:
        ps = compile_policies({"f.policy": text})
    except PolicyErrors as exc:
        assert exc.errors, "PolicyErrors without errors"
        for e in exc.errors:
            assert isinstance(e, PolicyError)
            assert e.file == "f.policy" and e.line >= 1 and e.column >= 1, repr(e)
            assert str(e).startswith(f"f.policy:{e.line}:{e.column}: error: ")
        return "error"
    for req in REQUESTS:
        if req.data_bytes is not None:
            req.data = MISSING  # parse again: data is cached on the request
        d = ps.decide(req)
        assert isinstance(d, Decision)
        assert ps.explain(req).allowed == d.allowed
    once = format_source(text, "f.policy")
    assert format_source(once) == once
    assert shape(parse(once)) == shape(parse(text))
    return "ok"


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 100_000
    seed = int(argv[1]) if len(argv) > 1 else 1
    rng = random.Random(seed)
    tally: dict[str, int] = {"ok": 0, "error": 0}
    start = time.perf_counter()
    for i in range(count):
        text = GENERATORS[i % len(GENERATORS)](rng)
        try:
            tally[check_one(text)] += 1
        except Exception:
            print(f"FAILED on input {i}:\n{text!r}", file=sys.stderr)
            raise
    took = time.perf_counter() - start
    print(
        f"{count} inputs in {took:.1f}s: {tally['ok']} loaded, {tally['error']} refused "
        "with positioned errors, 0 crashes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
