"""Timestamps of the publish path's stages, for the benchmarks' latency breakdown.

Off unless the environment variable ``LOCKGATE_STAGE_LOG`` names a file: then every published
batch records when its frame was read (``received``), validated, decided (policies), identified
(dedup and ids), stored (the group commit answered) and routed (queued for the ephemeral
subscribers), and every body a subscriber stream sent records when grpc took it (``sent``);
the garbage collector's pauses are recorded too (generation, start, end); the file gets one
JSON object per line at exit. Times are ``time.monotonic_ns()``, one clock
for every process on a Linux machine, so ``bench/run.py`` joins them by event id with the
publisher's send time and the subscriber's receive time. Off, it costs one attribute read per
batch.

Example::

    LOCKGATE_STAGE_LOG=/tmp/stages.jsonl lockgate serve
"""

from __future__ import annotations

import atexit
import gc
import json
import os
from pathlib import Path
from time import monotonic_ns

__all__ = ["STAGES", "StageLog", "now"]

now = monotonic_ns

_MAX_ROWS = 1_000_000  # about 100 MB of memory at most, whatever the run's length


class StageLog:
    """Stage times of batches (by first id) and of sent bodies (by first id)."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.enabled = bool(path)
        self._batches: list[tuple[int, ...]] = []
        self._sent: list[tuple[int, int]] = []
        self._gc: list[tuple[int, int, int]] = []
        self._gc_start = 0

    def watch_gc(self) -> None:
        """Record every collection's pause from now on."""
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = monotonic_ns()
        elif len(self._gc) < _MAX_ROWS:
            self._gc.append((info["generation"], self._gc_start, monotonic_ns()))

    def batch(self, first_id: int, marks: tuple[int, ...]) -> None:
        """``marks``: received, validated, decided, identified, stored, routed."""
        if len(self._batches) < _MAX_ROWS:
            self._batches.append((first_id, *marks))

    def sent(self, first_id: int, at: int) -> None:
        if len(self._sent) < _MAX_ROWS:
            self._sent.append((first_id, at))

    def dump(self) -> None:
        if not self.enabled:
            return
        with Path(self.path).open("w") as out:
            for row in self._batches:
                out.write(json.dumps({"batch": row}) + "\n")
            for row in self._sent:
                out.write(json.dumps({"sent": row}) + "\n")
            for pause in self._gc:
                out.write(json.dumps({"gc": pause}) + "\n")


STAGES = StageLog(os.environ.get("LOCKGATE_STAGE_LOG", ""))
"""The process's stage log (a diagnostic: one per process, like the environment it reads)."""
if STAGES.enabled:
    STAGES.watch_gc()
    atexit.register(STAGES.dump)
