"""API key expiry and rotation against a real ``lockgate serve``, with the ``lockgate keys`` CLI
beside it (as an operator would) and the real client: a key stops at its expiry, a rotated key
keeps working for its grace period and then stops, and open streams end with them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from lockgate import clients
from lockgate.broker import cli
from lockgate.broker.store import AuditQuery
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc
from tests.broker.e2e_kit import LOCKGATE, auth, error_info, event, lockgate_cli, subscribe, unique
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _key(data: str, *args: str) -> tuple[str, str]:
    """Runs ``lockgate keys ARGS``; returns the printed key and its stderr sentence."""
    proc = subprocess.run(
        [LOCKGATE, "keys", *args, "--data-dir", data],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert key.startswith("lg_"), proc.stdout
    return key, proc.stderr


def _listing(data: str) -> dict[str, list[str]]:
    return _rows(lockgate_cli("keys", "list", "--data-dir", data))


def _listing_in_process(data: str) -> dict[str, list[str]]:
    """``lockgate keys list`` through the CLI's entry point in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["keys", "list", "--data-dir", data]) == 0
    return _rows(out.getvalue())


def _rows(printed: str) -> dict[str, list[str]]:
    out = printed.splitlines()
    assert out[0].split("\t") == [
        "KEY_ID",
        "ORG",
        "AGENT",
        "ROLES",
        "STATE",
        "EXPIRES",
        "REPLACED_BY",
    ]
    return {row.split("\t")[0]: row.split("\t")[1:] for row in out[1:]}


async def _publish(target: str, key: str) -> str:
    """ "ok", or the reason the broker refused the key with."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        try:
            await stub.PublishOne(
                broker_pb2.PublishOneRequest(subject=unique("k"), event=event()),
                metadata=auth(key),
                timeout=10,
            )
        except grpc.aio.AioRpcError as err:
            code, reason, _ = error_info(err)
            assert code == UNAUTHENTICATED, err
            return reason
    return "ok"


def _refused(target: str, key: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await _publish(target, key) == "CREDENTIAL_EXPIRED"

    return check


async def test_a_key_stops_at_its_expiry(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    admin, _ = await asyncio.to_thread(_key, data, "create", "--org", "acme", "--agent", "ops")
    port = _free_port()
    async with (
        run_broker(data_dir=data, extra_args=["--http", f"127.0.0.1:{port}"]) as rb,
        aiohttp.ClientSession() as http,
        grpc.aio.insecure_channel(rb.target) as ch,
    ):
        # Created beside the running broker, with a short life.
        short, said = await asyncio.to_thread(
            _key, data, "create", "--org", "acme", "--agent", "brief", "--ttl", "4s"
        )
        # What needs the key alive comes first: a CLI listing (a process start, seconds on
        # a loaded machine) before it let the short life run out first.
        async with clients.Client(rb.target, api_key=short) as c:
            await c.publish(unique("brief"), {"n": 1})
        sub = await subscribe(broker_pb2_grpc.BrokerServiceStub(ch), auth(short), pattern="x.>")
        assert "expires=20" in said
        short_id = short.split("_")[1]
        assert _listing(data)[short_id][3:5] != ["active", "never"]
        # The open stream ends by itself at the expiry; new calls are refused.
        await eventually(lambda: sub.error is not None, timeout=20, what="the stream ends")
        assert sub.error is not None
        assert error_info(sub.error)[:2] == (UNAUTHENTICATED, "CREDENTIAL_EXPIRED")
        await sub.close()
        assert await _publish(rb.target, short) == "CREDENTIAL_EXPIRED"
        url = f"http://127.0.0.1:{port}/v1/events?subject=x.y"
        async with http.get(url, headers={"Authorization": f"Bearer {short}"}) as resp:
            assert resp.status == 401
            assert json.loads(await resp.text())["reason"] == "CREDENTIAL_EXPIRED"
        assert _listing(data)[short_id][3] == "expired"
        assert await _publish(rb.target, admin) == "ok"


async def test_a_rotated_key_works_for_its_grace_period_then_stops(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    old, _ = await asyncio.to_thread(
        _key, data, "create", "--org", "acme", "--agent", "bot", "--role", "admin", "--ttl", "30d"
    )
    old_id = old.split("_")[1]
    async with run_broker(data_dir=data) as rb, grpc.aio.insecure_channel(rb.target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        assert await _publish(rb.target, old) == "ok"
        sub = await subscribe(stub, auth(old), pattern="rot.>")
        new, said = await asyncio.to_thread(_key, data, "rotate", old_id, "--grace", "4s")
        new_id = new.split("_")[1]
        # Both work during the grace period ...
        assert await _publish(rb.target, new) == "ok"
        assert await _publish(rb.target, old) == "ok"
        assert f"rotated key {old_id} to {new_id}" in said
        # In-process, so that it comes well within the 4 s grace (a process start can take
        # seconds here); the process boundary is _key's and the other test's listing.
        listing = await asyncio.to_thread(_listing_in_process, data)
        assert listing[old_id][3] == "rotating" and listing[old_id][5] == new_id
        # Same org, agent and roles; a lifetime as long as the old one's (30 days).
        assert listing[new_id][:3] == ["acme", "bot", "admin"] and listing[new_id][4] != "never"
        # ... then the old one stops, on new calls and on its open stream.
        await eventually(
            _refused(rb.target, old), timeout=20, interval=0.5, what="the old key is refused"
        )
        await eventually(lambda: sub.error is not None, timeout=10, what="its stream ends")
        assert sub.error is not None
        assert error_info(sub.error)[:2] == (UNAUTHENTICATED, "CREDENTIAL_EXPIRED")
        await sub.close()
        async with clients.Client(rb.target, api_key=new) as c:
            await c.publish(unique("rot"), {"n": 2})
        async with clients.Client(rb.target, api_key=old) as c:
            with pytest.raises(clients.Unauthenticated):
                await c.publish(unique("rot"), {"n": 3})
    # The rotation is in the audit log: the old key, the new one, and when the old one stopped.
    store = SqliteStore(data)
    await store.open()
    try:
        (rec,) = await store.query_audit(AuditQuery(action="key.rotate"))
    finally:
        await store.close()
    assert (rec.outcome, rec.org, rec.target, rec.detail["new_key"]) == (
        "ok",
        "acme",
        old_id,
        new_id,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["rotate", "000000000000"], "no key with id 000000000000 to rotate"),
        (
            ["create", "--org", "o", "--agent", "a", "--ttl", "1d", "--expires", "2099-01-01"],
            "not both",
        ),
        (["create", "--org", "o", "--agent", "a", "--expires", "2001-01-01"], "in the past"),
        (["create", "--org", "o", "--agent", "a", "--ttl", "soon"], "soon"),
    ],
)
async def test_bad_key_commands_say_why(tmp_path: Path, args: list[str], words: str) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [LOCKGATE, "keys", *args, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
