"""The ``lockgate`` command line as a user runs it: a real process, its output and exit code.

Exit codes (broker/cli_errors.py): 1 failed, 2 usage, 78 configuration or installation.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# Runs `lockgate` in an interpreter where the server's dependencies cannot be imported, as
# after `pip install lockgate` (the client alone).
SERVER_PACKAGES = (
    "lark re2 opentelemetry uvloop grpc_health grpc_reflection aiohttp redis nats asyncpg"
)
_NOT_INSTALLED = textwrap.dedent(
    """
    import importlib.abc, sys
    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] in MISSING:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, NotInstalled())
    """
)


def lockgate(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def client_only(code: str, missing: str = SERVER_PACKAGES) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` where the (space-separated) ``missing`` packages cannot be imported."""
    prelude = f"MISSING = {missing.split()!r}\n" + _NOT_INSTALLED
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


async def test_a_second_serve_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    async with run_broker(str(tmp_path)) as first:
        proc = await asyncio.to_thread(
            lockgate, "serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"
        )
        assert proc.returncode == 1, proc.stderr
        no_traceback(proc)
        assert f"the data directory {tmp_path} is in use by another lockgate (pid " in proc.stderr
        assert str(first.proc.pid) in proc.stderr
        assert "hint: " in proc.stderr
        assert first.proc.returncode is None  # the first one serves on
        await first.kill()  # a crash releases the lock: the next start succeeds
        await first.restart()


def test_config_redacts_secrets(tmp_path: Path) -> None:
    config = tmp_path / "lockgate.toml"
    config.write_text(
        textwrap.dedent(
            """
            [broker]
            limiter = "redis://user:hunter2@127.0.0.1:6379/0"
            [gateways.webhook]
            secret = "s3cr3t-webhook"
            org_secrets = { acme = "s3cr3t-acme" }
            """
        )
    )
    proc = lockgate("config", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t" not in proc.stdout and "hunter2" not in proc.stdout
    shown = json.loads(proc.stdout)
    assert shown["gateways"]["webhook"]["secret"] == "<redacted>"
    assert shown["gateways"]["webhook"]["org_secrets"] == {"acme": "<redacted>"}
    assert shown["limiter"] == "redis://user:<redacted>@127.0.0.1:6379/0"


async def test_pub_count_reports_what_was_stored_and_what_was_refused() -> None:
    async with run_broker(extra_args=["--spam-max-per-minute", "200"]) as b:
        proc = await asyncio.to_thread(
            lockgate, "pub", "cli.count", '{"n": 1}', "--count", "300", "--server", b.target
        )
        assert proc.returncode == 1, proc.stderr
        no_traceback(proc)
        summary = json.loads(proc.stdout)
        assert summary["published"] == 200 and summary["refused"] == 100
        assert summary["errors"] == {"RATE_LIMITED": 100}
        assert isinstance(summary["first_id"], str) and isinstance(summary["last_id"], str)
        assert "200 of 300 events were stored and 100 refused (100 RATE_LIMITED)" in proc.stderr
        history = await asyncio.to_thread(
            lockgate, "history", "cli.count", "--limit", "1000", "--server", b.target
        )
        stored = [json.loads(line) for line in history.stdout.splitlines()]
        assert len(stored) == 200
        assert stored[0]["id"] == summary["first_id"] and stored[-1]["id"] == summary["last_id"]


async def test_ids_are_json_strings_in_every_command() -> None:
    async with run_broker() as b:
        pub = await asyncio.to_thread(lockgate, "pub", "cli.ids", "1", "--server", b.target)
        [event_id] = [json.loads(pub.stdout)["id"]]
        assert isinstance(event_id, str) and int(event_id) > 2**53  # beyond a JS number
        one = await asyncio.to_thread(lockgate, "history", "--id", event_id, "--server", b.target)
        assert json.loads(one.stdout)["id"] == event_id
        sub = await asyncio.to_thread(
            lockgate,
            *("sub", "cli.ids", "--durable", "ids", "--start", "all", "--count", "1"),
            *("--server", b.target),
        )
        assert json.loads(sub.stdout)["id"] == event_id
        listed = await asyncio.to_thread(lockgate, "durables", "list", "--server", b.target)
        [durable] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert durable["delivered_id"] == event_id and isinstance(durable["ack_floor"], str)


def test_exit_codes_usage_2_config_78() -> None:
    usage = lockgate("serve", "--no-such-flag")
    assert usage.returncode == 2 and "unrecognized arguments" in usage.stderr
    config = lockgate("config", "--fsync", "sometimes")
    assert config.returncode == 78, config.stderr
    assert config.stderr.startswith("lockgate: fsync = 'sometimes' is not one of")
    no_traceback(config)


def test_the_client_imports_without_the_server() -> None:
    proc = client_only(
        """
        import sys
        from lockgate import clients
        top = clients.__name__.rpartition(".")[0]  # "lockgate" once installed under one name
        prefix = top + "." if top else ""
        ours = [m.removeprefix(prefix) for m in sys.modules if m.startswith(prefix)]
        print(" ".join(m for m in ours if m.partition(".")[0] in ("broker", "policy", "gateways")))
        """
    )
    assert proc.returncode == 0, proc.stderr
    loaded = [m.split(".") for m in proc.stdout.split()]
    # the broker package itself, its generated stubs and the wire codec: nothing of the server
    assert all(m[0] == "broker" and m[1:2] in ([], ["v1"], ["wire"]) for m in loaded), loaded


def test_serve_without_the_server_extra_names_it(tmp_path: Path) -> None:
    proc = client_only(
        f"""
        from lockgate.broker.cli import main
        sys.exit(main(["serve", "--data-dir", {str(tmp_path)!r}, "--listen", "127.0.0.1:0"]))
        """
    )
    assert proc.returncode == 78, proc.stderr
    no_traceback(proc)
    assert "is not installed" in proc.stderr
    assert "hint: pip install 'lockgate[server]'" in proc.stderr


def test_client_commands_work_without_the_server_extra() -> None:
    proc = client_only(
        """
        from lockgate.broker.cli import main
        sys.exit(main(["pub", "x.y", "1", "--server", "127.0.0.1:1"]))
        """
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("lockgate: cannot reach the broker at 127.0.0.1:1")


def test_a_gateway_without_its_extra_names_it() -> None:
    proc = client_only(
        """
        from lockgate.broker.cli import main
        sys.exit(main(["gateway", "http", "--listen", "127.0.0.1:0"]))
        """
    )
    assert proc.returncode == 78, proc.stderr
    no_traceback(proc)
    assert "hint: pip install 'lockgate[" in proc.stderr


def test_serve_with_gateway_tables_without_their_extra_names_it(tmp_path: Path) -> None:
    config = tmp_path / "lockgate.toml"
    config.write_text('[gateways.http]\nlisten = "127.0.0.1:0"\n')
    proc = client_only(
        f"""
        from lockgate.broker.cli import main
        sys.exit(main(["serve", "--config", {str(config)!r}, "--data-dir", {str(tmp_path)!r},
                       "--listen", "127.0.0.1:0"]))
        """,
        missing="aiohttp",
    )
    assert proc.returncode == 78, proc.stderr
    no_traceback(proc)
    assert "the optional package 'aiohttp'" in proc.stderr
    assert "hint: pip install 'lockgate[gateways]'" in proc.stderr
