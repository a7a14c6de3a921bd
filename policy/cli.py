"""``lockgate policy ...``: check, fmt, test and explain policy directories.

``main(argv)`` returns 0, or 1 when a test failed or a request was denied. Failures raise:
``PolicyErrors`` for broken policies, ``argparse.ArgumentTypeError`` for bad usage or input;
``lockgate`` (broker/cli.py) prints them, one sentence each with their caret, never a traceback.
Commands that need more than this pure package (``replay`` reads the broker's log) are handed
in by the caller as :class:`ExtraCommand` values, so that ``--help`` lists them with the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import PolicySet
from .errors import PolicyError
from .files import load_policy_dir, new_parser
from .fmt import format_source
from .testing import load_cases, request_from, run_cases

__all__ = ["ExtraCommand", "main"]


class _UsageError(argparse.ArgumentTypeError):
    """Bad usage or input found after parsing (``lockgate`` exits with 2)."""


@dataclass(frozen=True, slots=True)
class ExtraCommand:
    """A ``lockgate policy`` subcommand defined outside this package."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _parser(extra: Mapping[str, ExtraCommand]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lockgate policy", description="Work with policy files.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="load a directory and report every error and warning")
    c.add_argument("dir")
    f = sub.add_parser("fmt", help="rewrite files in canonical form")
    f.add_argument("paths", nargs="+", help="*.policy files or directories")
    f.add_argument("--check", action="store_true", help="only report files that would change")
    t = sub.add_parser("test", help="run the *.tests.json / *.tests.toml cases of a directory")
    t.add_argument("dir")
    e = sub.add_parser("explain", help="decide one request and show every rule tried")
    e.add_argument("dir")
    e.add_argument("--subject", required=True)
    e.add_argument("--action", default="publish", choices=["publish", "subscribe", "request"])
    e.add_argument("--principal", default="{}", help='JSON: {"org", "agent", "roles", "attrs"}')
    e.add_argument("--event", default="{}", help='JSON CloudEvent; "data" holds the data')
    e.add_argument("--now", type=float, default=None, help="unix seconds (default: now)")
    for name, command in extra.items():
        x = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(x)
    return p


def _print_problems(problems: Sequence[PolicyError]) -> None:
    for e in problems:
        print(e.render(), file=sys.stderr)


def _load(dir_: str) -> PolicySet:
    ps = load_policy_dir(dir_, new_parser())
    _print_problems(ps.warnings)
    return ps


def _check(args: argparse.Namespace) -> int:
    ps = _load(args.dir)
    rules = len(ps.rules)
    policies = len(ps.policy_names)
    w = len(ps.warnings)
    print(
        f"ok: {len(ps.sources)} files, {policies} policies, {rules} rules, "
        f"{w} warning{'s' if w != 1 else ''} (version {ps.version})"
    )
    return 0


def _policy_files(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.policy")))
        elif p.is_file():
            out.append(p)
        else:
            raise _UsageError(f"{raw}: no such file or directory")
    return out


def _fmt(args: argparse.Namespace) -> int:
    changed: list[Path] = []
    errors: list[PolicyError] = []
    parser = new_parser()
    for path in _policy_files(args.paths):
        text = path.read_text("utf-8")
        try:
            new = format_source(text, str(path), parser)
        except PolicyError as exc:
            errors.append(exc)
            continue
        if new != text:
            changed.append(path)
            if not args.check:
                path.write_text(new, "utf-8")
    _print_problems(errors)
    verb = "would reformat" if args.check else "reformatted"
    for path in changed:
        print(f"{verb} {path}")
    print(f"{len(changed)} file{'s' if len(changed) != 1 else ''} {verb}")
    return 1 if errors or (args.check and changed) else 0


def _test(args: argparse.Namespace) -> int:
    ps = _load(args.dir)
    root = Path(args.dir)
    files = sorted([*root.rglob("*.tests.json"), *root.rglob("*.tests.toml")])
    if not files:
        raise _UsageError(f"{args.dir}: no *.tests.json or *.tests.toml files")
    cases: list[dict[str, Any]] = []
    for f in files:
        cases.extend(load_cases(f))
    report = run_cases(ps, cases)
    for r in report.results:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.name}: {r.detail}")
    print(f"{len(report.results) - report.failed} passed, {report.failed} failed")
    covered = [rid for rid, _ in report.rules if rid in report.fired]
    print(f"coverage: {len(covered)} of {len(report.rules)} rules fired")
    for rid, kind in report.rules:
        print(f"  {'x' if rid in report.fired else ' '} {rid} {kind}")
    return 1 if report.failed else 0


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _UsageError(f"--{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _UsageError(f"--{what} must be a JSON object")
    return value


def _explain(args: argparse.Namespace) -> int:
    ps = _load(args.dir)
    case: dict[str, Any] = {
        "action": args.action,
        "subject": args.subject,
        "principal": _json(args.principal, "principal"),
        "event": _json(args.event, "event"),
    }
    if args.now is not None:
        case["now"] = args.now
    d = ps.explain(request_from(case))
    for line in d.trace:
        print(line)
    for x in d.limits:
        print(f"limit {x.key}: {x.rate_per_second:g}/s burst {x.burst:g}")
    for r in d.routes:
        print(f"route {r.mode} to {r.subject} [{r.rule}]")
    for t in d.tags:
        print(f"tag {t.name}={t.value} [{t.rule}]")
    for u in d.dedup:
        print(f"dedup {u.key} within {u.window_seconds:g}s [{u.rule}]")
    return 0 if d.allowed else 1


_COMMANDS = {"check": _check, "fmt": _fmt, "test": _test, "explain": _explain}


def main(argv: list[str], extra: Mapping[str, ExtraCommand] | None = None) -> int:
    """Run ``lockgate policy <command> ...``; returns the exit code or raises (see above)."""
    extra = extra or {}
    args = _parser(extra).parse_args(argv)
    try:
        if args.command in extra:
            return extra[args.command].run(args)
        return _COMMANDS[args.command](args)
    except ValueError as exc:  # a malformed case file or request
        raise _UsageError(str(exc)) from None
