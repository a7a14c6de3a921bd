"""Start a real broker process for tests and tools, like ``nats.server.run(port=0)``.

>>> async with run_broker() as b:          # doctest: +SKIP
...     async with Client(b.target) as c:
...         await c.publish("demo", {"x": 1})
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

__all__ = ["RunningBroker", "run_broker"]

_READY = re.compile(rb"lockgate ready on (\S+):(\d+)")


@dataclass
class RunningBroker:
    """A broker process: ``target`` to connect to, ``data_dir``, and control methods."""

    proc: asyncio.subprocess.Process
    host: str
    port: int
    data_dir: str
    args: list[str] = field(default_factory=list)
    output: list[bytes] = field(default_factory=list)
    open_files: int = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait (graceful drain); returns the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def restart(self) -> None:
        """Starts a new process on the same port and data dir (after terminate or kill)."""
        new = await _start(self.args, self.data_dir, self.port, self.open_files)
        self.proc, self.port, self.output = new.proc, new.port, new.output


_LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def _with_open_files(cmd: list[str], n: int) -> list[str]:
    """``cmd`` run with ``n`` open files, soft and hard (0: inherited): a small Python sets the
    limit, then execs ``cmd`` (same process). Not a ``preexec_fn``: that makes subprocess
    fork() this process, and a fork while its grpc threads were busy crashed the child in
    grpc's poller (SIGABRT, "epoll_wait error: Bad file descriptor", 1 run in 20 under load);
    without one it spawns with vfork, which runs no fork handlers."""
    return [sys.executable, "-c", _LIMITED, str(n), *cmd] if n else cmd


async def _start(
    args: Sequence[str], data_dir: str, port: int, open_files: int = 0
) -> RunningBroker:
    cmd = [
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        data_dir,
        *args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        *_with_open_files(cmd, open_files),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output: list[bytes] = []
    assert proc.stdout is not None
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), max(remaining, 0.1))
        except TimeoutError:
            proc.kill()
            raise RuntimeError("broker did not start: " + b"".join(output).decode()) from None
        if not line:
            await proc.wait()
            raise RuntimeError(
                f"broker exited with {proc.returncode}: " + b"".join(output).decode()
            )
        output.append(line)
        m = _READY.search(line)
        if m:
            break
    rb = RunningBroker(
        proc, m.group(1).decode(), int(m.group(2)), data_dir, list(args), output, open_files
    )

    async def drain() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            output.append(line)

    rb._drain = asyncio.ensure_future(drain())  # type: ignore[attr-defined]
    return rb


@contextlib.asynccontextmanager
async def run_broker(
    data_dir: str | None = None,
    extra_args: Sequence[str] = (),
    port: int = 0,
    *,
    open_files: int = 0,
) -> AsyncIterator[RunningBroker]:
    """Runs ``lockgate serve`` on an ephemeral port until the block ends (with ``open_files``
    as its soft and hard limit of open files, when given)."""
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lockgate-test-")
        data_dir = tmp.name
    rb = await _start(list(extra_args), data_dir, port, open_files)
    try:
        yield rb
    finally:
        with contextlib.suppress(ProcessLookupError, TimeoutError):
            await rb.terminate()
        await rb.kill()
        if tmp is not None:
            tmp.cleanup()
