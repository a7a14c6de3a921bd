"""The data directory lock: one holder at a time, released when its block ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.broker.datadir import DataDirInUse, lock_data_dir


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "dir"
    with lock_data_dir(data_dir):
        assert (data_dir / "lockgate.lock").read_text() == f"{os.getpid()}\n"
        # flock belongs to an open file: a second open, even in this process, is refused.
        with pytest.raises(DataDirInUse) as refused, lock_data_dir(data_dir):
            pass
        assert refused.value.message == (
            f"the data directory {data_dir} is in use by another lockgate (pid {os.getpid()})"
        )
        assert "--data-dir" in refused.value.hint
    with lock_data_dir(data_dir):  # released: the next holder gets it
        pass
