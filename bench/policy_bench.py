"""Benchmark the policy engine against a plain lambda, cel-python and cel-expr-python.

    .venv/bin/python bench/policy_bench.py [--runs 7] [--number 200000]

The rule: deny publish when event.type == "payment.failed" and event.data.amount > 10000
and not principal.roles has_any ["finance","audit"] and subject starts_with "billing."
(in a policy with an unconditional ``allow publish``, so both outcomes are real decisions),
on subject "billing.eu" with data already parsed. Our figures include the subject lookup
and the Decision; the CEL figures are the expression alone with a prebuilt activation, so
they flatter CEL. cel-python / cel-expr-python are bench-only: skipped when not installed.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lockgate.policy import Principal, Request, compile_policies

RULE = (
    'deny publish when event.type == "payment.failed" and event.data.amount > 10000 '
    'and not principal.roles has_any ["finance","audit"] and subject starts_with "billing."'
)
CEL = (
    'event.type == "payment.failed" && event.data.amount > 10000 && '
    '!principal.roles.exists(r, r in ["finance", "audit"]) && subject.startsWith("billing.")'
)
POLICY = f'policy billing on "billing.>" {{\n  allow publish\n  {RULE}\n}}\n'
PRINCIPAL = Principal("acme", "agent-7", frozenset({"billing"}))


def requests() -> dict[str, Request]:
    ev = {"type": "payment.failed", "source": "urn:x", "id": "1", "specversion": "1.0"}
    return {
        "denied": Request("publish", "billing.eu", PRINCIPAL, ev, {"amount": 50000}),
        "allowed": Request("publish", "billing.eu", PRINCIPAL, ev, {"amount": 5}),
    }


def measure(fn: Callable[[], object], number: int, runs: int) -> tuple[float, float, float]:
    """(median, min, max) nanoseconds per call over ``runs`` runs of ``number`` calls."""
    times = [t / number * 1e9 for t in timeit.repeat(fn, number=number, repeat=runs)]
    return statistics.median(times), min(times), max(times)


def row(name: str, m: tuple[float, float, float], base: float | None) -> None:
    ratio = f"{m[0] / base:6.2f}x" if base else "   base"
    print(f"  {name:<44} {m[0]:9.0f} ns  (min {m[1]:.0f}, max {m[2]:.0f})  {ratio}")


def bench_decide(number: int, runs: int) -> None:
    ps = compile_policies({"billing.policy": POLICY})
    reqs = requests()
    print(f"per decision, median of {runs} runs x {number:,} calls:")
    for outcome, req in reqs.items():
        assert ps.decide(req).allowed == (outcome == "allowed")
        ours = measure(functools.partial(ps.decide, req), number, runs)
        print(f" {outcome} event:")
        row("lockgate PolicySet.decide (lookup + rule)", ours, None)
        lam = _lambda()
        assert lam(req) == (outcome == "denied")
        row(
            "plain Python lambda (rule only)",
            measure(functools.partial(lam, req), number, runs),
            ours[0],
        )
        for name, make in (
            ("cel-python (celpy) evaluate", _celpy),
            ("cel-python (celpy) CompiledRunner", functools.partial(_celpy, compiled=True)),
            ("cel-expr-python eval", _celexpr),
        ):
            try:
                fn = make(req)
            except ImportError:
                print(f"  {name:<44} not installed")
                continue
            except Exception as exc:  # a baseline that cannot run this rule is reported, not fatal
                print(f"  {name:<44} cannot run the rule: {type(exc).__name__}: {exc}")
                continue
            n = max(number // 100, 1000) if "celpy" in name else number
            row(f"{name} (rule only)", measure(fn, n, runs), ours[0])


def _lambda() -> Callable[[Request], bool]:
    finance = frozenset({"finance", "audit"})
    return lambda r: (
        r.event is not None
        and r.event.get("type") == "payment.failed"
        and isinstance(r.data, dict)
        and r.data.get("amount", 0) > 10000
        and finance.isdisjoint(r.principal.roles)
        and r.subject.startswith("billing.")
    )


def _activation(req: Request) -> dict[str, Any]:
    assert req.event is not None
    return {
        "event": {**req.event, "data": req.data},
        "principal": {"roles": sorted(req.principal.roles)},
        "subject": req.subject,
    }


def _celpy(req: Request, compiled: bool = False) -> Callable[[], object]:
    celpy = importlib.import_module("celpy")

    env = celpy.Environment(runner_class=celpy.CompiledRunner if compiled else None)
    prog = env.program(env.compile(CEL))
    act = {k: celpy.json_to_cel(v) for k, v in _activation(req).items()}
    return lambda: prog.evaluate(act)


def _celexpr(req: Request) -> Callable[[], object]:
    cel = importlib.import_module("cel_expr_python.cel")

    env = cel.NewEnv(
        variables={"event": cel.Type.DYN, "principal": cel.Type.DYN, "subject": cel.Type.STRING}
    )
    expr = env.compile(CEL)
    act = env.Activation(_activation(req))
    return lambda: expr.eval(act)


def bench_many(number: int, runs: int) -> None:
    one = compile_policies({"billing.policy": POLICY})
    many_src = {"billing.policy": POLICY}
    for i in range(10_000):
        rule = f'allow publish when event.type == "t{i}"'
        many_src[f"p{i}.policy"] = f'policy p{i} on "svc{i}.*.x{i % 7}" {{\n  {rule}\n}}\n'
    t0 = time.perf_counter()
    many = compile_policies(many_src)
    took = time.perf_counter() - t0
    req = requests()["denied"]
    a = measure(lambda: one.decide(req), number, runs)
    b = measure(lambda: many.decide(req), number, runs)
    # a cold lookup (cache miss): a fresh subject each call walks the trie
    subjects = [f"billing.s{i}" for i in range(number // 4)]
    it = iter(subjects * 4)
    cold_one = measure(lambda: one._entry(next(it)), number // 4, 1)
    it = iter(subjects * 4)
    cold_many = measure(lambda: many._entry(next(it)), number // 4, 1)
    print(f"10,000 unrelated policies (set compiled in {took:.2f} s):")
    row("1 policy: decide", a, None)
    row("10,001 policies: decide", b, a[0])
    row("1 policy: subject lookup, cache miss", cold_one, None)
    row("10,001 policies: subject lookup, cache miss", cold_many, cold_one[0])


def bench_compile(runs: int) -> None:
    rules = []
    for i in range(1000):
        rules.append(
            f'  allow publish when event.type == "t{i}" and event.data.n{i} > {i} '
            f'and principal.roles has_any ["r{i}", "admin"]'
        )
    src = {"big.policy": 'policy big on "big.>" {\n' + "\n".join(rules) + "\n}\n"}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        compile_policies(src)
        times.append(time.perf_counter() - t0)
    print(
        f"compile one set of 1,000 rules: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}) over {runs} runs"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--number", type=int, default=200_000)
    args = ap.parse_args()
    print(f"Python {sys.version.split()[0]}")
    bench_decide(args.number, args.runs)
    bench_many(args.number, args.runs)
    bench_compile(max(args.runs, 5))


if __name__ == "__main__":
    main()
