"""One ``lockgate serve`` per data directory: an advisory lock held for the process lifetime.

Two brokers on one ``--data-dir`` would both append to the log and split the data between
them. The second one is refused with a sentence naming the first one's pid. The lock is a
``flock`` on ``<data-dir>/lockgate.lock``: the kernel releases it when the process dies,
however it dies, so a crash never leaves a stale lock behind (the file itself stays).

Example::

    with lock_data_dir(config.data_dir):
        run(config)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from lockgate.broker.errors import FailedPrecondition, Reason

__all__ = ["LOCK_FILE", "DataDirInUse", "lock_data_dir"]

LOCK_FILE = "lockgate.lock"


class DataDirInUse(FailedPrecondition):
    """Another process holds the data directory."""

    def __init__(self, data_dir: str, holder: str) -> None:
        who = f"another lockgate (pid {holder})" if holder else "another lockgate"
        super().__init__(
            f"the data directory {data_dir} is in use by {who}",
            reason=Reason.DATA_DIR_IN_USE,
            hint="stop that broker, or give this one its own --data-dir",
        )


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def lock_data_dir(data_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``data_dir`` for this process until the block ends; raise :class:`DataDirInUse`."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            raise DataDirInUse(str(data_dir), holder)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
