"""The SQLite store's engine: connections, the group commit and the reader thread.

One writer owns the write connection and commits whatever accumulated while the previous
commit ran (group commit): under load a commit carries many publish batches and consumer
updates, so the fsync cost is shared. A second thread serves reads on its own connection,
which WAL lets run beside the writer. The role implementations (``sqlite.py``,
``sqlite_consumers.py``) queue operations here and read through :meth:`SqliteEngine._read`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lockgate.broker.errors import FailedPrecondition, Unavailable
from lockgate.broker.store.sqlite_schema import ensure_schema

__all__ = ["FSYNC_MODES", "Op", "SqliteEngine"]

FSYNC_MODES = {"always": "FULL", "os": "NORMAL", "never": "OFF"}
T = TypeVar("T")

Op = Callable[[sqlite3.Connection], object]
"""A write, run inside a group commit; its result is what its future gives."""
AfterCommit = Callable[[Any], None]
"""Called with a write's result on the event loop as soon as its commit returns, before any
future of that commit is done, in queue order (see :meth:`SqliteEngine._enqueue`)."""

_log = logging.getLogger("lockgate.store")


_OPEN_TRIES = 20  # about 10 s in all
_INLINE_BYTES = 32 << 10
"""Commits that write less than this run on the event loop (without an fsync a small
commit is a few tens of microseconds, less than a hand-off to a thread); bigger ones run on
the writer's thread, where SQLite releases the GIL, so the loop prepares the next batches
meanwhile (a 500-event batch writes about 125 KB: milliseconds of copying into the WAL)."""


class SqliteEngine:
    """Group commit over one write connection, reads on another."""

    FILE_NAME = "lockgate.db"  # in the data directory

    def __init__(self, data_dir: str | os.PathLike[str], *, fsync: str = "os") -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
        self.path = Path(data_dir) / self.FILE_NAME
        self._sync = FSYNC_MODES[fsync]
        self._inline = fsync != "always"
        self._checkpointer: asyncio.Task[None] | None = None
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="lockgate-store-w")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="lockgate-store-r")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None
        self._queue: list[tuple[Op, asyncio.Future[object], AfterCommit | None]] = []
        self._queued_bytes = 0
        """What the queued operations write, as far as their callers said."""
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._seq = 0
        """The last sequence given to a batch (advanced by the commit that writes it)."""
        self._committed = 0

    # -- life cycle -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup() -> sqlite3.Connection:
            conn = self._connect()
            try:
                ensure_schema(conn, self.path)
            except BaseException:
                conn.close()
                raise
            row = conn.execute("SELECT MAX(seq) FROM batches").fetchone()
            self._seq = self._committed = int(row[0] or 0)
            return conn

        try:
            # Two processes opening a new file at once (a broker and `lockgate keys`, or two
            # `keys create`) can meet SQLITE_BUSY without the busy handler while one switches
            # the file to WAL: retry for a bounded while rather than fail the open.
            for attempt in range(_OPEN_TRIES):
                try:
                    self._w = await self._run(self._wpool, setup)
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == _OPEN_TRIES - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
            self._r = await self._run(self._rpool, self._connect)
        except sqlite3.Error as exc:
            raise FailedPrecondition(
                f"cannot open the store at {self.path}: {exc}",
                reason="DATA_DIR_UNUSABLE",
                hint="check that --data-dir is writable and not used by another broker",
            ) from exc
        self._wake = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop(), name="lockgate-store-writer")
        if self._inline:
            # Small commits run on the loop, so checkpoints (which copy the WAL into the database
            # and fsync it) must not: they run from the reader's thread instead.
            await self._run(
                self._wpool,
                lambda: self._w.execute(  # type: ignore[union-attr]
                    "PRAGMA wal_autocheckpoint=0"
                ),
            )
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    async def _checkpoint_loop(self) -> None:
        wal = Path(str(self.path) + "-wal")
        while True:
            await asyncio.sleep(1.0)
            try:
                if wal.exists() and wal.stat().st_size > 16 << 20:
                    await self._read(lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)"))
            except (OSError, Unavailable) as exc:
                _log.warning("store.sqlite.checkpoint_failed: %s", exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        if self._writer is not None and self._wake is not None:
            self._wake.set()
            await self._flush_all()
            self._writer.cancel()
        for conn, pool in ((self._w, self._wpool), (self._r, self._rpool)):
            if conn is not None:
                await self._run(pool, conn.close)
            pool.shutdown(wait=True)

    async def _flush_all(self) -> None:
        while self._queue:
            await asyncio.gather(*(f for _, f, _ in list(self._queue)), return_exceptions=True)

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    # -- group commit -----------------------------------------------------------------------

    def _enqueue(
        self, op: Op, size: int = 0, after: AfterCommit | None = None
    ) -> asyncio.Future[object]:
        """Queues ``op`` for the next group commit; its future gives what ``op`` returned.
        ``size``: about how many bytes it writes (big commits leave the event loop).
        ``after``: called with that result in the writer's own step once the commit returns,
        not when the future's callbacks run: those wait a loop turn, behind whatever grpc
        completed meanwhile (about 100-350 us under load), and the ephemeral fan-out hangs
        on it. Not called when the commit fails."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self._closed and self._writer is None:
            fut.set_exception(Unavailable("the store is closed", reason="STORE_UNAVAILABLE"))
            return fut
        self._queue.append((op, fut, after))
        self._queued_bytes += size
        assert self._wake is not None
        self._wake.set()
        return fut

    async def _submit(self, op: Op) -> None:
        await self._enqueue(op)

    async def _write_loop(self) -> None:
        assert self._wake is not None and self._w is not None
        conn = self._w
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                work, self._queue = self._queue, []
                size, self._queued_bytes = self._queued_bytes, 0
                self._before_commit()

                def commit(
                    work: list[tuple[Op, asyncio.Future[object], AfterCommit | None]] = work,
                ) -> list[object]:
                    seq = self._seq
                    conn.execute("BEGIN")
                    try:
                        results = [op(conn) for op, _, _ in work]
                    except BaseException:
                        conn.execute("ROLLBACK")
                        self._seq = seq  # the sequences of a failed commit are given again
                        raise
                    conn.execute("COMMIT")
                    return results

                try:
                    if self._inline and size < _INLINE_BYTES:
                        # Without an fsync a small commit is a few tens of microseconds of
                        # writing to the OS: cheaper on the loop than a hand-off to a thread.
                        results = commit()
                    else:
                        results = await self._run(self._wpool, commit)
                except sqlite3.Error as exc:
                    err = Unavailable(
                        f"the store failed to write: {exc}", reason="STORE_UNAVAILABLE"
                    )
                    err.__cause__ = exc
                    for _, fut, _ in work:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                self._committed = self._seq
                for (_, _, after), result in zip(work, results, strict=True):
                    if after is not None:
                        try:
                            after(result)
                        except Exception:  # a listener's bug must not stop the writer
                            _log.exception("store.sqlite.after_commit_failed")
                for (_, fut, _), result in zip(work, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._r
        assert conn is not None, "store is not open"
        try:
            return await self._run(self._rpool, lambda: fn(conn))
        except sqlite3.Error as exc:
            raise Unavailable(
                f"the store failed to read: {exc}", reason="STORE_UNAVAILABLE"
            ) from exc

    def _before_commit(self) -> None:
        """Runs on the event loop when the writer takes the queued work for a commit."""
