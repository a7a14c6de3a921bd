"""Real nats-server processes with JetStream for tests that stop or kill them: one server,
or a cluster of three joined by routes, each on ephemeral loopback ports with its own store
directory. ``LOCKGATE_TEST_NATS_SERVER`` names the binary (default: ``nats-server`` on the
PATH, then /usr/sbin/nats-server); a missing one skips (fails under ``CI=true``).

Example::

    async with nats_cluster(tmp_path, size=3) as cluster:
        url = cluster.url          # every server, comma-separated
        cluster.kill(0)            # kill -9 of one server
        cluster.start(0)           # back, same ports and store
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["NatsCluster", "find_nats_server", "free_port", "nats_cluster"]


def find_nats_server() -> str:
    """The nats-server binary, or a skip (a failure under CI)."""
    found = os.environ.get("LOCKGATE_TEST_NATS_SERVER") or shutil.which("nats-server")
    if not found and Path("/usr/sbin/nats-server").exists():
        found = "/usr/sbin/nats-server"
    if not found:
        reason = "nats-server is not installed (set LOCKGATE_TEST_NATS_SERVER)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class NatsCluster:
    """Servers ``0..size-1``: client port, route port and store directory each."""

    binary: str
    root: Path
    size: int
    client_ports: list[int] = field(default_factory=list)
    route_ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes] | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def server_url(self, n: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[n]}"

    def _config(self, n: int) -> Path:
        lines = [
            f'server_name: "n{n}"',
            f"listen: 127.0.0.1:{self.client_ports[n]}",
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.root / f"n{n}"}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 1GB",
            "}",
        ]
        if self.size > 1:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{p}" for i, p in enumerate(self.route_ports) if i != n
            )
            lines += [
                "cluster {",
                '  name: "lgtest"',
                f"  listen: 127.0.0.1:{self.route_ports[n]}",
                f"  routes: [{routes}]",
                "}",
            ]
        path = self.root / f"n{n}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, n: int) -> None:
        """Starts server ``n`` and waits until it takes connections."""
        log = open(self.root / f"n{n}.log", "ab")  # noqa: SIM115 - the process holds it
        proc = subprocess.Popen([self.binary, "-c", str(self._config(n))], stdout=log, stderr=log)
        self.procs[n] = proc
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"nats-server n{n} exited: see {self.root / f'n{n}.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.client_ports[n]), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server n{n} did not start within 10 s")

    def kill(self, n: int) -> None:
        """kill -9 of server ``n``."""
        proc = self.procs[n]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs[n] = None

    def stop_all(self) -> None:
        for n in range(self.size):
            self.kill(n)


@asynccontextmanager
async def nats_cluster(root: Path, size: int = 1) -> AsyncIterator[NatsCluster]:
    """``size`` servers (1, or 3 joined by routes) under ``root``, killed afterwards."""
    cluster = NatsCluster(find_nats_server(), root, size)
    cluster.client_ports = [free_port() for _ in range(size)]
    cluster.route_ports = [free_port() for _ in range(size)] if size > 1 else []
    cluster.procs = [None] * size
    try:
        for n in range(size):
            cluster.start(n)
        yield cluster
    finally:
        cluster.stop_all()
