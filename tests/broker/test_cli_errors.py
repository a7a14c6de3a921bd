"""Bad input on the command line: one sentence and a hint, a non-zero exit, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def lockgate(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused(
    proc: subprocess.CompletedProcess[str], *phrases: str, code: int | None = None
) -> None:
    """One sentence and a hint, no traceback; ``code`` as broker/cli_errors.py lists them."""
    assert proc.returncode != 0 if code is None else proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr, proc.stderr


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = lockgate("serve", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}")
    assert_refused(proc, f"lockgate: cannot listen on 127.0.0.1:{port}", "hint: ", code=1)


def test_broken_policy_dir_at_start(tmp_path: Path) -> None:
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "x.policy").write_text('policy x on "a.>" { allow jump }\n')
    proc = lockgate(
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "127.0.0.1:0",
        "--policy-dir",
        str(pdir),
    )
    assert_refused(proc, "x.policy:1:", "^", "hint: ", code=1)


def test_missing_config_file(tmp_path: Path) -> None:
    proc = lockgate("serve", "--config", str(tmp_path / "nope.toml"))
    assert_refused(proc, "lockgate: config file", "does not exist", code=78)


def test_policy_replay_bad_duration(tmp_path: Path) -> None:
    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "ok.policy").write_text('policy ok on "a.>" { allow publish }\n')
    proc = lockgate(
        "policy", "replay", str(pdir), "--data-dir", str(tmp_path / "d"), "--since", "soon"
    )
    assert_refused(proc, "'soon' is not a time", "hint: ")


def test_policy_replay_needs_a_data_dir_and_never_creates_one(tmp_path: Path) -> None:
    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "ok.policy").write_text('policy ok on "a.>" { allow publish }\n')
    proc = lockgate("policy", "replay", str(pdir))
    assert_refused(proc, "needs --data-dir", "hint: ")
    empty = tmp_path / "empty"
    proc = lockgate("policy", "replay", str(pdir), "--data-dir", str(empty))
    assert_refused(proc, "holds no Lockgate log", "hint: ")
    assert not empty.exists()


def test_policy_help_lists_replay() -> None:
    proc = lockgate("policy", "--help")
    assert proc.returncode == 0
    assert "replay" in proc.stdout and "check" in proc.stdout
    proc = lockgate("policy", "replay", "--help")
    assert proc.returncode == 0 and "--data-dir" in proc.stdout
