"""The broker's garbage-collector settings (broker/heap.py)."""

from __future__ import annotations

import gc

from lockgate.broker import heap


def test_settle_freezes_what_startup_built() -> None:
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0  # out of every later collection's walk
        assert gc.isenabled()  # cycles made from now on are still collected
    finally:
        gc.unfreeze()
