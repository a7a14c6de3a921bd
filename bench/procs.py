"""Processes the orchestrator runs: the broker, nats-server, bench workers, py-spy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import Args, Result
from lockgate.broker.testing import run_broker

ROOT = Path(__file__).resolve().parents[1]
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class WorkerError(RuntimeError):
    pass


class Worker:
    """A ``python -m bench.worker`` process and its line protocol."""

    def __init__(self, role: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.role, self.proc, self.log = role, proc, log

    @classmethod
    async def start(cls, role: str, args: Args, tmp: Path) -> Worker:
        log = tmp / f"{role}-{os.urandom(3).hex()}.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.worker",
                role,
                json.dumps(args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                limit=64 << 20,  # a latency run's RESULT line carries every sample
            )
        return cls(role, proc, log)

    async def expect(self, kind: str, timeout: float = 120.0) -> Result:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise WorkerError(f"{self.role} exited: {self._stderr()}")
            word, _, rest = line.decode().strip().partition(" ")
            if word == kind:
                return json.loads(rest) if rest else {}
            if word == "RESULT":
                raise WorkerError(f"{self.role} failed: {json.loads(rest).get('error')}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write(line.encode() + b"\n")

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    def _stderr(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@contextlib.asynccontextmanager
async def lockgate_server(
    tmp: Path, extra_args: list[str]
) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """A fresh broker on a free port with a fresh data dir: ({"target": ...}, pid)."""
    data_dir = tempfile.mkdtemp(prefix="lockgate-bench-", dir=tmp)
    async with run_broker(data_dir=data_dir, extra_args=extra_args) as b:
        yield {"target": b.target}, b.proc.pid
    shutil.rmtree(data_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def nats_server(tmp: Path) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """A fresh nats-server with JetStream on a free port: ({"url": ...}, pid)."""
    store = tempfile.mkdtemp(prefix="nats-bench-", dir=tmp)
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        NATS_SERVER,
        *("-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _nats_ready(proc)
        yield {"url": f"nats://127.0.0.1:{port}"}, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()
        shutil.rmtree(store, ignore_errors=True)


@contextlib.asynccontextmanager
async def grpc_floor(tmp: Path) -> AsyncIterator[tuple[dict[str, Any], int]]:
    """The minimal grpcio relay of bench/grpc_floor.py on a free port: ({"target": ...}, pid)."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bench.grpc_floor", str(port)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if b"floor ready" not in line:
            raise RuntimeError(f"the grpc floor server did not start: {line!r}")
        yield {"target": f"127.0.0.1:{port}"}, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def _nats_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    seen: list[bytes] = []
    while b"Server is ready" not in (line := await asyncio.wait_for(proc.stderr.readline(), 20)):
        if not line:
            raise RuntimeError("nats-server exited: " + b"".join(seen).decode())
        seen.append(line)

    async def drain() -> None:
        assert proc.stderr is not None
        while await proc.stderr.readline():
            pass

    proc._bench_drain = asyncio.ensure_future(drain())  # type: ignore[attr-defined]


class PySpy:
    """``py-spy record`` attached to a pid until ``stop()``; speedscope output."""

    def __init__(self, proc: asyncio.subprocess.Process, out: Path) -> None:
        self.proc, self.out = proc, out

    @classmethod
    async def attach(cls, pid: int, out: Path, rate: int = 250, *, native: bool = False) -> PySpy:
        """``native``: C frames too (``--native``), where grpcio, uvloop and nats-py's
        parser spend their time."""
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        proc = await asyncio.create_subprocess_exec(
            exe,
            *("record", "--pid", str(pid), "--rate", str(rate), "--format", "speedscope"),
            *(("--native",) if native else ()),
            *("--output", str(out)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # let it attach
        return cls(proc, out)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.proc.wait(), 60)
