"""A gateway that cannot start (a busy port, a missing optional extra) says so in one
sentence with a hint, without a traceback, and exits non-zero."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker

pytestmark = pytest.mark.e2e


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def lockgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_standalone_gateway_on_a_busy_port(busy_port: int) -> None:
    proc = lockgate(
        "gateway", "http", "--broker", "127.0.0.1:1", "--listen", f"127.0.0.1:{busy_port}"
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"cannot listen on 127.0.0.1:{busy_port}" in proc.stderr
    assert "hint:" in proc.stderr


def test_standalone_gateway_without_its_extra(tmp_path: Path) -> None:
    # A stand-in that fails to import as a missing nats-py would.
    fake = tmp_path / "nats"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nats'\", name='nats')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    proc = lockgate("gateway", "nats", "--broker", "127.0.0.1:1", env=env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "needs the optional package 'nats'" in proc.stderr
    assert "pip install 'lockgate[nats]'" in proc.stderr


async def test_serve_with_a_gateway_on_a_busy_port(tmp_path: Path, busy_port: int) -> None:
    cfg = tmp_path / "lockgate.toml"
    cfg.write_text(f'[gateways.http]\nlisten = "127.0.0.1:{busy_port}"\n')
    with pytest.raises(RuntimeError) as exc:
        async with run_broker(extra_args=["--config", str(cfg)]):
            pass
    assert f"cannot listen on 127.0.0.1:{busy_port}" in str(exc.value)
    assert "Traceback" not in str(exc.value)
