"""The ``lockgate policy`` subcommands, called through ``lockgate``'s own ``main(argv)`` (which
prints their failures and picks the exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.broker.cli import main as lockgate


def main(argv: list[str]) -> int:
    return lockgate(["policy", *argv])


POLICY = """policy billing on "billing.>" {
  allow publish when "billing" in principal.roles
  deny publish when event.data.amount > 10000 because "too large"
  tag "priority" = "high" when subject[1] == "eu"
}
"""


@pytest.fixture
def pdir(tmp_path: Path) -> Path:
    (tmp_path / "billing.policy").write_text(POLICY)
    return tmp_path


def test_check_ok(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(pdir)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 files, 1 policies, 3 rules, 0 warnings")


def test_check_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.policy").write_text('policy a on "x" {\n  allow publish when foo == 1\n}\n')
    (tmp_path / "b.policy").write_text("policy b {")
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "a.policy:2:22: error: unknown name 'foo'" in err
    assert "b.policy:1:10: error: unexpected '{'" in err
    assert "2 errors; the policies were not loaded" in err
    assert "Traceback" not in err


def test_check_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_fmt_check_and_write(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = pdir / "billing.policy"
    f.write_text(POLICY.replace("allow publish when", "allow   publish  when"))
    assert main(["fmt", "--check", str(pdir)]) == 1
    assert "would reformat" in capsys.readouterr().out
    assert main(["fmt", str(f)]) == 0
    assert f.read_text() == POLICY
    assert main(["fmt", "--check", str(pdir)]) == 0


def test_fmt_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.policy").write_text("policy {")
    assert main(["fmt", str(tmp_path)]) == 1
    assert "bad.policy:1:8: error" in capsys.readouterr().err


def test_test_command(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        {
            "name": "ok",
            "subject": "billing.eu",
            "principal": {"org": "acme", "agent": "a", "roles": ["billing"]},
            "event": {"type": "x", "data": {"amount": 1}},
            "expect": {"allowed": True, "rule": "billing.policy:2"},
        },
        {
            "name": "wrong expectation",
            "subject": "billing.eu",
            "event": {"data": {"amount": 1}},
            "expect": {"allowed": True},
        },
    ]
    (pdir / "billing.tests.json").write_text(json.dumps(cases))
    (pdir / "more.tests.toml").write_text(
        '[[case]]\nname = "big"\nsubject = "billing.us"\n'
        'principal = { roles = ["billing"] }\nevent = { data = { amount = 99999 } }\n'
        'expect = { allowed = false, effect = "deny", rule = "billing.policy:3" }\n'
    )
    assert main(["test", str(pdir)]) == 1
    out = capsys.readouterr().out
    assert "PASS ok" in out
    assert "FAIL wrong expectation: allowed: expected True, got False" in out
    assert "PASS big" in out
    assert "2 passed, 1 failed" in out
    assert "coverage: 3 of 3 rules fired" in out


def test_test_without_cases(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(pdir)]) == 2
    assert "no *.tests.json" in capsys.readouterr().err


def test_explain(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "explain",
            str(pdir),
            "--subject",
            "billing.eu",
            "--principal",
            '{"roles": ["billing"]}',
            "--event",
            '{"data": {"amount": 3}}',
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "billing.policy:3 deny: did not fire" in out
    assert "tag priority=high [billing.policy:4]" in out


def test_explain_bad_json(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(pdir), "--subject", "x", "--event", "{"]) == 2
    assert capsys.readouterr().err.startswith("lockgate: --event is not valid JSON")


def test_usage_error() -> None:
    assert main(["frobnicate"]) == 2


def test_case_without_expectation(pdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (pdir / "x.tests.json").write_text(json.dumps([{"name": "nothing", "subject": "a"}]))
    assert main(["test", str(pdir)]) == 2
    assert "case 'nothing' needs expect.allowed" in capsys.readouterr().err
