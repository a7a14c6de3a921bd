"""Every load-time check, with its exact line and column."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lockgate.policy import PolicyErrors
from tests.policy.policy_helpers import compile_policies


def _problems(src: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    try:
        ps = compile_policies({"t.policy": src})
    except PolicyErrors as exc:
        errs = [(e.line, e.column, e.message) for e in exc.errors]
        return errs, [(w.line, w.column, w.message) for w in exc.warnings]
    return [], [(w.line, w.column, w.message) for w in ps.warnings]


def _p(*rules: str, on: str = '"x"') -> str:
    return f"policy a on {on} {{\n" + "\n".join(f"  {r}" for r in rules) + "\n}"


ERRORS = [
    ("syntax", _p("allow publish when"), (3, 1, "unexpected '}'")),
    ("unknown name", _p('allow publish when evnt.type == "a"'), (2, 22, "unknown name 'evnt'")),
    (
        "unknown principal attribute",
        _p('allow publish when principal.team == "a"'),
        (2, 22, "unknown principal attribute 'team'"),
    ),
    (
        "bad extension name",
        _p('allow publish when event.Foo == "a"'),
        (2, 22, "unknown event attribute 'Foo'"),
    ),
    (
        "number vs string",
        _p("allow publish when event.data.n > 1 and event.type == 5"),
        (2, 54, "cannot compare a string with a number"),
    ),
    ("ordering a bool", _p("allow publish when true < 5"), (2, 22, "'<' does not order a bool")),
    (
        "in on text",
        _p('allow publish when event.type in "abc"'),
        (2, 36, "'in' needs a list on its right, found a string"),
    ),
    (
        "backreference",
        _p('allow publish when event.type matches "(a)\\\\1"'),
        (2, 41, "invalid regular expression: invalid escape sequence: \\1"),
    ),
    (
        "lookahead",
        _p('allow publish when event.type matches "a(?=b)"'),
        (2, 41, "invalid regular expression: invalid perl operator: (?="),
    ),
    (
        "regex too long",
        _p('allow publish when event.type matches "' + "a" * 1001 + '"'),
        (2, 41, "invalid regular expression: pattern is 1001 characters, over 1000"),
    ),
    (
        "regex not literal",
        _p("allow publish when event.type matches event.source"),
        (2, 41, "'matches' takes a string literal pattern"),
    ),
    (
        "not a condition",
        _p("allow publish when event.type"),
        (2, 22, "expected a condition, found a string"),
    ),
    (
        "unknown function",
        _p("allow publish when lenght(event.type) > 1"),
        (2, 22, "unknown function 'lenght'"),
    ),
    (
        "bad timestamp",
        _p('allow publish when now > timestamp("yesterday")'),
        (2, 38, "not an RFC 3339 timestamp: 'yesterday'"),
    ),
    (
        "bad action literal",
        _p('allow publish when action == "publsh"'),
        (2, 32, "'publsh' is not an action"),
    ),
    (
        "pattern with > inside",
        _p("allow publish", on='"x.>.y"'),
        (1, 13, "subject pattern 'x.>.y' is invalid: '>' may only be the last token"),
    ),
    (
        "pattern with empty token",
        _p("allow publish", on='"ok", "a..b"'),
        (1, 19, "subject pattern 'a..b' is invalid: token 2 is empty"),
    ),
    (
        "unreachable after unconditional deny",
        _p("deny publish", 'allow publish when event.type == "a"'),
        (3, 3, "unreachable allow rule: publish is denied unconditionally at line 2"),
    ),
    (
        "limit on denied action",
        _p("deny publish", "limit publish 5 per second"),
        (3, 3, "this limit can never trigger: publish is denied unconditionally at line 2"),
    ),
    (
        "limit rate 0",
        _p("allow publish", "limit publish 0 per second"),
        (3, 3, "a limit of 0 per second never lets anything through"),
    ),
    (
        "limit burst 0",
        _p("allow publish", "limit publish 5 per second burst 0"),
        (3, 3, "a burst of 0 never lets anything through"),
    ),
    (
        "route to a wildcard",
        _p("allow publish", 'route copy to "a.*"'),
        (
            3,
            17,
            "route subject 'a.*' is invalid: wildcards '*' and '>' are only allowed in "
            "subscription patterns",
        ),
    ),
    (
        "route loop",
        'policy a on "a.>" {\n  allow publish\n  route copy to "b.x"\n}\n'
        'policy b on "b.>" {\n  allow publish\n  route copy to "a.x"\n}',
        (3, 3, "route loop: t.policy:3 -> t.policy:7 -> t.policy:3"),
    ),
    (
        "tag name",
        _p("allow publish", 'tag "Bad-Name" = "x"'),
        (3, 3, "'Bad-Name' is not a CloudEvents extension name"),
    ),
    (
        "tag on a core attribute",
        _p("allow publish", 'tag "type" = "x"'),
        (3, 3, "'type' is not a CloudEvents extension name"),
    ),
    (
        "duplicate policy",
        'policy a on "x" {\n  allow publish\n}\npolicy a on "y" {\n  allow publish\n}',
        (4, 1, "policy 'a' is already defined at t.policy:1"),
    ),
    (
        "nesting",
        _p("allow publish when " + "not " * 40 + "true"),
        (2, 54, "expression nested deeper than 32 levels"),
    ),
    (
        "subject attribute",
        _p('allow publish when subject.foo == "a"'),
        (2, 22, "a subject token is read as subject[n]"),
    ),
    (
        "number too long",
        _p("allow publish when event.data.n > " + "9" * 40),
        (2, 37, "number longer than 18 digits"),
    ),
    ("bare event", _p('allow publish when event == "x"'), (2, 22, "event is not a value")),
    (
        "size of number",
        _p("allow publish when size(5) > 1"),
        (2, 27, "size() takes a string or a list, not a number"),
    ),
    (
        "exists of literal",
        _p('allow publish when exists("a")'),
        (2, 29, "exists() takes a name such as event.data.x"),
    ),
    (
        "duration vs number",
        _p("allow publish when 5m > 3"),
        (2, 25, "cannot compare a duration with a number"),
    ),
    (
        "timestamp plus number",
        _p("allow publish when now + 5 > now"),
        (2, 26, "cannot compute timestamp + number"),
    ),
    (
        "list of names",
        _p("allow publish when event.type in [event.source]"),
        (2, 37, "a list holds literals only"),
    ),
]

WARNINGS = [
    (
        "shadowed allow",
        _p("allow publish", 'allow publish when event.type == "a"'),
        (3, 3, "shadowed: line 2 already allows publish unconditionally"),
    ),
    (
        "duplicate rule",
        _p(
            "allow publish",
            'deny publish when event.type == "a"',
            'deny publish when event.type == "a"',
        ),
        (4, 3, "duplicate of the rule at line 3"),
    ),
    (
        "conditional route loop",
        _p("allow publish", 'route copy to "a.y" when event.type == "z"', on='"a.>"'),
        (3, 3, "route loop: t.policy:3 -> t.policy:3"),
    ),
    (
        "shadowed by a broader deny",
        'policy a on "x.>" {\n  deny publish\n}\npolicy b on "x.y" {\n  allow publish\n}',
        (
            5,
            3,
            "shadowed: t.policy:2 denies publish on x.> unconditionally, so this allow "
            "never takes effect",
        ),
    ),
    (
        "limit shadowed by a broader deny",
        'policy a on "x.>" {\n  deny publish\n}\npolicy b on "x.y" {\n  allow subscribe\n'
        "  limit publish 5 per second\n}",
        (
            6,
            3,
            "shadowed: t.policy:2 denies publish on x.> unconditionally, so this limit "
            "never takes effect",
        ),
    ),
    (
        "allow/deny conflict",
        'policy a on "x.*" {\n  allow publish\n}\npolicy b on "*.y" {\n  deny publish\n'
        "  allow subscribe\n}",
        (
            2,
            3,
            "conflict: t.policy:5 denies what this rule allows on overlapping subjects; deny wins",
        ),
    ),
    (
        "deny without any allow",
        _p('deny publish when event.type == "a"'),
        (2, 3, "no rule allows publish on x, so every publish there is denied by default"),
    ),
]


@pytest.mark.parametrize(("src", "want"), [pytest.param(s, w, id=n) for n, s, w in ERRORS])
def test_error(src: str, want: tuple[int, int, str]) -> None:
    errors, _ = _problems(src)
    assert want in errors


@pytest.mark.parametrize(("src", "want"), [pytest.param(s, w, id=n) for n, s, w in WARNINGS])
def test_warning_loads(src: str, want: tuple[int, int, str]) -> None:
    errors, warnings = _problems(src)
    assert errors == []
    assert want in warnings


def test_all_errors_collected_across_files() -> None:
    with pytest.raises(PolicyErrors) as info:
        compile_policies(
            {
                "a.policy": _p("allow publish when nope == 1", "allow subscribe when x.y == 2"),
                "b.policy": "policy b on {",
                "c.policy": _p("allow publish"),
            }
        )
    got = [(e.file, e.line, e.column) for e in info.value.errors]
    assert got == [("a.policy", 2, 22), ("a.policy", 3, 24), ("b.policy", 1, 13)]
    assert len(info.value) == 3


def test_number_string_error_text() -> None:
    with pytest.raises(PolicyErrors) as info:
        compile_policies({"billing.policy": _p("allow publish when principal.org == 10")})
    err = info.value.errors[0]
    assert str(err) == (
        "billing.policy:2:36: error: cannot compare a string with a number\n"
        "    allow publish when principal.org == 10\n"
        "                                     ^\n"
        "  hint: write numbers without quotes, or quote both sides"
    )


def test_set_checks_scale_with_unrelated_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The set checks compare a policy only with those whose patterns are near it (a trie),
    so 2,000 unrelated policies cost about 2,000 pattern comparisons, not 4,000,000. Counted,
    not timed: a timing bound fails on a busy machine."""
    from lockgate.policy import analysis

    calls = 0

    def counting(name: str) -> Callable[[str, str], bool]:
        real = getattr(analysis, name)

        def count(a: str, b: str) -> bool:
            nonlocal calls
            calls += 1
            return bool(real(a, b))

        return count

    for name in ("covers", "overlaps"):
        monkeypatch.setattr(analysis, name, counting(name))
    n = 2000
    sources = {
        f"p{i}.policy": f'policy p{i} on "svc{i}.>" {{\n  deny publish\n'
        f'  deny subscribe when event.type == "x"\n}}\n'
        for i in range(n)
    }
    ps = compile_policies(sources)
    assert len(ps.warnings) == 2 * n
    assert calls <= 10 * n, f"{calls} pattern comparisons for {n} unrelated policies"


def test_a_long_source_line_is_shown_around_the_caret() -> None:
    """A 200,000-character line is not copied into the message (which travels in a gRPC
    status the caller's transport refuses beyond 16 KiB)."""
    src = 'policy d on "a.>" {\n  deny publish when ' + "not " * 50_000 + "true\n}\n"
    with pytest.raises(PolicyErrors) as info:
        compile_policies({"d.policy": src})
    err = info.value.errors[0]
    rendered = str(err)
    assert len(rendered) < 400, len(rendered)
    _, line, caret = rendered.splitlines()[:3]
    assert line.startswith("  …") and line.endswith("…")
    # The caret still points at the column the head names.
    shown = line[caret.index("^")]
    assert shown == err.source_line[err.column - 1]
