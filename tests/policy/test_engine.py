"""PolicySet behaviour beyond the conformance data: API, loading, laziness, threads, cache."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from lockgate import policy
from lockgate.policy import MISSING, PolicyErrors, PolicySet, Principal, Request, load_policy_dir
from tests.policy.policy_helpers import compile_policies

BILLING = """policy billing on "billing.>" {
  allow publish when "billing" in principal.roles
  deny publish when event.type == "payment.failed" and event.data.amount > 10000
      unless "finance" in principal.roles
      because "large failed payments need finance"
}
"""
BOT = Principal("acme", "a7", frozenset({"billing"}))


def test_public_names_are_pinned() -> None:
    assert sorted(policy.__all__) == sorted(
        [
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
    )


def test_empty_set_allows_everything() -> None:
    ps = PolicySet.empty()
    d = ps.decide(Request("publish", "a.b", BOT))
    assert (d.allowed, d.effect, d.rule) == (True, "default", "")
    assert ps.sources == {}
    assert len(ps.version) == 12


def test_version_is_content_hash() -> None:
    a = compile_policies({"b.policy": BILLING})
    b = compile_policies({"b.policy": BILLING})
    c = compile_policies({"b.policy": BILLING + "\n"})
    assert a.version == b.version != c.version


def test_data_bytes_parsed_lazily_and_cached() -> None:
    ps = compile_policies({"b.policy": BILLING})
    ev = {"type": "payment.ok"}
    r = Request("publish", "billing.eu", BOT, ev, data_bytes=b'{"amount": 1}')
    assert ps.decide(r).allowed
    assert r.data is MISSING  # the first comparison failed, so data was never read
    r = replace(r, event={"type": "payment.failed"}, data_bytes=b'{"amount": 99999}')
    assert not ps.decide(r).allowed
    assert r.data == {"amount": 99999}


def test_request_defaults_to_no_event() -> None:
    ps = compile_policies({"b.policy": BILLING})
    assert ps.decide(Request("publish", "billing.x", BOT)).allowed


def test_default_deny_names_subject() -> None:
    ps = compile_policies({"b.policy": BILLING})
    d = ps.decide(Request("request", "billing.x", BOT))
    assert (d.allowed, d.effect, d.reason) == (
        False,
        "default",
        "no rule allows request on billing.x",
    )


def test_explain_traces_every_rule() -> None:
    ps = compile_policies({"b.policy": BILLING})
    ev = {"type": "payment.failed"}
    d = ps.explain(Request("publish", "billing.eu", BOT, ev, {"amount": 20000}))
    assert not d.allowed
    assert d.trace[0] == "policies: billing (billing.>)"
    assert d.trace[1].startswith("b.policy:3 deny: fired")
    assert d.trace[-1] == ("=> denied (deny): large failed payments need finance [b.policy:3]")


def test_load_policy_dir_recursive(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.policy").write_text(BILLING)
    (tmp_path / "notes.txt").write_text("ignored")
    ps = load_policy_dir(tmp_path)
    assert list(ps.sources) == ["sub/b.policy"]
    d = ps.decide(Request("publish", "billing.eu", BOT))
    assert d.rule == "sub/b.policy:2"


def test_load_policy_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(tmp_path / "nope")
    assert "not a directory" in str(info.value)


def test_file_too_large() -> None:
    with pytest.raises(PolicyErrors, match="larger than"):
        compile_policies({"big.policy": "#" * (1 << 20 + 1)})


def test_unknown_action_denied() -> None:
    for ps in (PolicySet.empty(), compile_policies({"b.policy": BILLING})):
        d = ps.decide(Request("delete", "billing.eu", BOT))
        assert not d.allowed
        assert d.reason == "unknown action 'delete'"


def test_threads_agree() -> None:
    ps = compile_policies({"b.policy": BILLING})
    results: list[bool] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        local = []
        for i in range(2000):
            amount = 20000 if (i + n) % 2 else 5
            r = Request(
                "publish", f"billing.s{i % 50}", BOT, {"type": "payment.failed"}, {"amount": amount}
            )
            local.append(ps.decide(r).allowed == (amount == 5))
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16000 and all(results)


def test_subject_cache_is_bounded() -> None:
    ps = compile_policies({"b.policy": BILLING})
    for i in range(20000):
        ps.decide(Request("publish", f"billing.{i}", BOT))
    assert len(ps._cache) <= 8192


def test_many_policies_index() -> None:
    sources = {
        f"p{i}.policy": f'policy p{i} on "svc{i}.>" {{ allow publish when event.type == "t{i}" }}'
        for i in range(2000)
    }
    ps = compile_policies(sources)
    assert ps.matching("svc1234.x") == ("p1234",)
    d = ps.decide(Request("publish", "svc1234.x", BOT, {"type": "t1234"}))
    assert d.allowed and d.rule == "p1234.policy:1"
    assert not ps.decide(Request("publish", "svc1234.x", BOT, {"type": "t1"})).allowed


def test_decision_constants_shared() -> None:
    ps = compile_policies({"b.policy": BILLING})
    r = Request("publish", "billing.eu", BOT)
    assert ps.decide(r) is ps.decide(r)  # the common allowed case allocates nothing


def test_generated_code_has_no_user_text_outside_literals() -> None:
    evil = 'policy e on "x" {\n  allow publish when event.type == "\\"); import os; (\\""\n}'
    ps = compile_policies({"e.policy": evil})
    assert ps.decide(Request("publish", "x", BOT, {"type": '"); import os; ("'})).allowed
    assert "import os" not in ps.generated.replace(repr('"); import os; ("'), "")


def test_warnings_exposed() -> None:
    ps = compile_policies(
        {"d.policy": 'policy d on "x" {\n  deny publish when event.type == "a"\n}'}
    )
    assert [w.severity for w in ps.warnings] == ["warning"]
    assert json.dumps([str(w) for w in ps.warnings])


def test_regex_runs_in_linear_time() -> None:
    ps = compile_policies(
        {"r.policy": 'policy r on "x" {\n  deny publish when event.type matches "(a+)+$"\n}'}
    )
    ev = {"type": "a" * 200_000 + "!"}
    import time

    t0 = time.perf_counter()
    ps.decide(Request("publish", "x", BOT, ev))
    assert time.perf_counter() - t0 < 0.5


def test_data_may_be_any_mapping() -> None:
    from types import MappingProxyType

    ps = compile_policies({"b.policy": BILLING})
    data = MappingProxyType({"amount": 99999})
    r = Request("publish", "billing.eu", BOT, {"type": "payment.failed"}, data)
    assert not ps.decide(r).allowed
    deep = compile_policies(
        {"d.policy": 'policy d on "x" {\n  allow publish when event.data.a.b[1] == 2\n}'}
    )
    nested = MappingProxyType({"a": MappingProxyType({"b": (1, 2)})})
    assert deep.decide(Request("publish", "x", BOT, {}, nested)).allowed


def test_fail_closed_reason_names_rule_and_error() -> None:
    ps = compile_policies({"b.policy": BILLING})
    d = ps.decide(
        Request("publish", "billing.eu", BOT, {"type": "payment.failed"}, {"amount": "x"})
    )
    assert (d.allowed, d.effect, d.rule) == (False, "deny", "b.policy:3")
    assert d.reason == (
        "rule b.policy:3 failed to evaluate (TypeError: '>' not supported between instances of "
        "'str' and 'int'), so it denies"
    )


def test_odd_file_names_stay_data() -> None:
    name = "we'ird\n\"name\\.policy"
    ps = compile_policies({name: 'policy a on "x" {\n  deny publish when event.data.n > 1\n}'})
    d = ps.decide(Request("publish", "x", BOT, {}, {"n": "text"}))
    assert (d.allowed, d.rule) == (False, f"{name}:2")
