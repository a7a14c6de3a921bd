"""The backend settings (``store``, ``backbone``, ``limiter``): where they come from, what
the factory builds from them, and the sentence a user reads when one cannot be served."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from lockgate.broker.backbone.local import LocalBackbone
from lockgate.broker.config import ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.dedup import MemoryDedupWindow
from lockgate.broker.errors import BrokerError, Reason
from lockgate.broker.factory import build_backends
from lockgate.broker.leases import LocalLeases
from lockgate.broker.limits import LocalLimiter, RedisLimiter
from lockgate.broker.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_backends(tmp_path: Path) -> None:
    config = load_config({"data_dir": str(tmp_path)}, env={})
    assert (config.store, config.backbone, config.limiter) == ("sqlite", "local", "local")
    b = build_backends(config)
    assert isinstance(b.store, SqliteStore)
    assert isinstance(b.backbone, LocalBackbone)
    assert isinstance(b.limiter, LocalLimiter)
    assert isinstance(b.leases, LocalLeases)
    assert isinstance(b.dedup, MemoryDedupWindow)


def test_settings_from_environment_file_and_flags(tmp_path: Path) -> None:
    toml = tmp_path / "lockgate.toml"
    toml.write_text('[broker]\nbackbone = "nats://n1:4222"\n')
    env = {"LOCKGATE_STORE": "postgresql://lg@db/lockgate", "LOCKGATE_LIMITER": "redis://r:1/0"}
    config = load_config({"limiter": "redis://r:2/0"}, config_file=str(toml), env=env)
    assert (config.store, config.backbone, config.limiter) == (
        "postgresql://lg@db/lockgate",
        "nats://n1:4222",
        "redis://r:2/0",  # the flag wins
    )


@pytest.mark.parametrize(
    ("setting", "value"),
    [("store", "mysql://db"), ("backbone", "kafka://k"), ("limiter", "memcached://m")],
)
def test_an_unknown_backend_is_invalid_config(setting: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config({setting: value}, env={})
    assert exc.value.reason == Reason.INVALID_CONFIG
    assert f"{setting} = {value!r} is not one of" in exc.value.message


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({"backbone": "nats://n:4222"}, "store = postgresql://USER@HOST/DB and limiter ="),
        ({"store": "postgresql://lg@db/x"}, "backbone = nats://HOST:4222 and limiter ="),
        (
            {"store": "postgresql://lg@db/x", "backbone": "nats://n:4222"},
            "also needs limiter = redis://HOST:6379/0:",
        ),
        (
            {"backbone": "nats://n:4222", "limiter": "redis://r:6379/0"},
            "also needs store = postgresql://USER@HOST/DB:",
        ),
    ],
)
def test_a_partial_cluster_is_refused_in_one_sentence(
    tmp_path: Path, settings: dict[str, str], missing: str
) -> None:
    config = load_config({**settings, "data_dir": str(tmp_path)}, env={})
    with pytest.raises(ConfigError) as exc:
        build_backends(config)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.reason == Reason.INVALID_CONFIG
    assert "needs cluster mode" in exc.value.message and missing in exc.value.message
    assert exc.value.message.count(". ") == 0  # one sentence


@pytest.mark.parametrize(
    ("setting", "value", "module", "extra"),
    [
        ("store", "postgresql://lg@db/x", "asyncpg", "postgres"),
        ("backbone", "nats://n:4222", "nats", "nats"),
        ("limiter", "redis://127.0.0.1:6379/0", "redis", "redis"),
    ],
)
def test_a_missing_extra_names_itself(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str,
    value: str,
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` fails
    config = load_config({setting: value, "data_dir": str(tmp_path)}, env={})
    with pytest.raises(BrokerError) as exc:
        build_backends(config)
    assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.reason == Reason.MISSING_EXTRA
    assert exc.value.hint == f"pip install 'lockgate[{extra}]'"


def test_the_redis_limiter_is_built_from_the_setting(tmp_path: Path) -> None:
    config = load_config({"limiter": "redis://127.0.0.1:6379/0"}, env={})
    assert isinstance(build_backends(config).limiter, RedisLimiter)


@pytest.mark.e2e
def test_serve_with_a_cluster_backbone_says_why_and_exits_78(tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--backbone", "nats://127.0.0.1:4222"]
    proc = subprocess.run(
        [sys.executable, "-m", "lockgate.broker.cli", *args, "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "lockgate: backbone = 'nats://127.0.0.1:4222' needs cluster mode"
    ), proc.stderr
    assert "hint: set backbone, store and limiter together" in proc.stderr
