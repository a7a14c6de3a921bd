"""Startup and configuration failures are refusals with a reason, never ``UNAVAILABLE``
(which tells a caller to retry later)."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from lockgate.broker.app import serve
from lockgate.broker.config import Config
from lockgate.broker.datadir import lock_data_dir
from lockgate.broker.errors import BrokerError, Reason
from lockgate.broker.testing import run_broker


async def _refusal(config: Config) -> BrokerError:
    with pytest.raises(BrokerError) as info:
        await serve(config)
    return info.value


async def test_busy_port_is_a_failed_precondition(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = await _refusal(Config(listen=f"127.0.0.1:{port}", data_dir=str(tmp_path)))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == Reason.LISTEN_FAILED and err.hint


async def test_open_listen_without_keys_is_a_failed_precondition(tmp_path: Path) -> None:
    err = await _refusal(Config(listen="0.0.0.0:0", data_dir=str(tmp_path)))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == Reason.INSECURE_LISTEN


async def test_missing_policy_dir_is_invalid_config(tmp_path: Path) -> None:
    config = Config(listen="127.0.0.1:0", data_dir=str(tmp_path), policy_dir=str(tmp_path / "nope"))
    err = await _refusal(config)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == Reason.INVALID_CONFIG


async def test_a_held_data_dir_is_a_failed_precondition(tmp_path: Path) -> None:
    async with run_broker(data_dir=str(tmp_path)):
        with pytest.raises(BrokerError) as info, lock_data_dir(tmp_path):
            pass
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.reason == Reason.DATA_DIR_IN_USE


async def test_an_unusable_store_is_a_failed_precondition(tmp_path: Path) -> None:
    (tmp_path / "lockgate.db").mkdir()  # sqlite cannot open a directory as its file
    err = await _refusal(Config(listen="127.0.0.1:0", data_dir=str(tmp_path)))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.reason == Reason.DATA_DIR_UNUSABLE
