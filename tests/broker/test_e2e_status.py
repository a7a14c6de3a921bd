"""``lockgate status`` (AdminService.GetStatus): the node's id, its store and the history's
lag (null on the embedded store, which has no message logger), the roster of one node for
the broker's admin (none for an org-admin); an agent is refused in one sentence; each
durable's dead letters, counted up to 1,000. The cluster side (a lag that is a number) is
tested on the cluster store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lockgate.broker.store import DeadLetterRecord
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.clients import Client, PermissionDenied
from tests.broker.e2e_kit import lockgate_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_status_of_an_embedded_node_and_an_agent_refused() -> None:
    with tempfile.TemporaryDirectory(prefix="lockgate-status-") as data_dir:
        out = await asyncio.to_thread(
            lockgate_cli, "keys", "create", "--org", "acme", "--agent", "w", "--data-dir", data_dir
        )
        agent_key = out.strip().splitlines()[0]
        admin = await asyncio.to_thread(
            lockgate_cli,
            *("keys", "create", "--org", "acme", "--agent", "lead", "--role", "org-admin"),
            *("--data-dir", data_dir),
        )
        admin_key = admin.strip().splitlines()[0]
        root = await asyncio.to_thread(
            lockgate_cli,
            *("keys", "create", "--org", "default", "--agent", "ops", "--role", "admin"),
            *("--data-dir", data_dir),
        )
        root_key = root.strip().splitlines()[0]
        async with run_broker(data_dir=data_dir) as b:
            env = {**os.environ, "LOCKGATE_API_KEY": admin_key}
            ok = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "lockgate.broker.cli", "status", "--server", b.target],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
                env=env,
            )
            assert ok.returncode == 0, ok.stderr
            status = json.loads(ok.stdout)
            assert status["store"] == "sqlite" and status["history_lag"] is None
            assert status["node"]  # worker id and a random suffix
            assert status["nodes"] == []  # the cluster's nodes are the broker admin's

            # The broker's admin: the roster of an embedded node is the node itself.
            async with Client(b.target, api_key=root_key) as c:
                (me,) = (await c.admin.status()).nodes
            assert me.node_id == status["node"] and me.listen and me.backbone == "local"
            assert me.worker_id == 0 and me.started <= me.last_heard and not me.card_unknown

            async with Client(b.target, api_key=agent_key) as c:
                with pytest.raises(PermissionDenied):
                    await c.admin.status()
            env["LOCKGATE_API_KEY"] = agent_key
            refused = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "lockgate.broker.cli", "status", "--server", b.target],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=60,
                env=env,
            )
            assert refused.returncode != 0
            first = refused.stderr.strip().splitlines()[0]
            assert first.startswith("lockgate: acme/w (agent) may not read the node's status")
            assert first.endswith("needs the org-admin role")
            assert "Traceback" not in refused.stderr


async def test_status_counts_each_durables_dead_letters_up_to_the_cap(tmp_path: Path) -> None:
    admin = await asyncio.to_thread(
        lockgate_cli,
        *("keys", "create", "--org", "default", "--agent", "ops", "--role", "admin"),
        *("--data-dir", str(tmp_path)),
    )
    admin_key = admin.strip().splitlines()[0]
    async with run_broker(data_dir=str(tmp_path)) as b, Client(b.target, api_key=admin_key) as c:
        for name in ("full", "few", "none"):
            await c.admin.create_durable(name, f"{name}.>")
    # Written while the broker is stopped: the dead letters it finds when it starts again.
    store = SqliteStore(str(tmp_path), fsync="never")
    await store.open()
    try:
        await store.add_dead_letters(
            [DeadLetterRecord("default", "full", i, 1, 1000 + i) for i in range(1, 1002)]
            + [DeadLetterRecord("default", "few", i, 1, 1000 + i) for i in (1, 2)]
        )
    finally:
        await store.close()
    async with run_broker(data_dir=str(tmp_path)) as b, Client(b.target, api_key=admin_key) as c:
        status = await c.admin.status()
    got = {d.name: (d.dead_letters, d.dead_letters_capped) for d in status.durables}
    assert got == {"full": (1000, True), "few": (2, False), "none": (0, False)}
