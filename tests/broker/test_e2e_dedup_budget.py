"""The dedup index's memory budget against a real broker (issue 8, resource exhaustion):
publishing many distinct events with the longest ids and sources shortens the dedup window
with a logged warning instead of growing the broker, and a retry inside the shortened window
is still recognised as a duplicate."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from tests.broker.e2e_kit import CloudEvent, Stubs, event, publish_batches, unique
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_index() -> AsyncIterator[RunningBroker]:
    with tempfile.TemporaryDirectory(prefix="lockgate-dedup-") as data_dir:
        conf = Path(data_dir) / "dedup.toml"
        conf.write_text(f'[broker]\ndedup_max_bytes = {1 << 20}\ndedup_window = "10m"\n')
        async with run_broker(data_dir=data_dir, extra_args=["--config", str(conf)]) as b:
            yield b


def _batch(n: int) -> list[CloudEvent]:
    return [
        event(source=f"src-{n}".ljust(1024, "s"), id=f"{n}-{i}".ljust(1024, "i"))
        for i in range(200)
    ]


async def test_distinct_large_ids_shorten_the_window(small_index: RunningBroker) -> None:
    subject = unique("dedup")
    batches = [_batch(n) for n in range(50)]  # 10,000 entries: ~1.4 MB for a 1 MiB budget
    async with grpc.aio.insecure_channel(small_index.target) as ch:
        s = Stubs(ch)
        first = await publish_batches(s.broker, subject, batches)
        assert all(not r.duplicate_indexes and len(r.ids) == 200 for r in first)

        def warned() -> bool:
            return any(b"dedup.window.shortened" in line for line in small_index.output)

        await eventually(warned, timeout=10)
        # A retry of the newest batch is still a duplicate, with the ids first given.
        [again] = await publish_batches(s.broker, subject, [batches[-1]])
        assert list(again.duplicate_indexes) == list(range(200))
        assert list(again.ids) == list(first[-1].ids)
        # The oldest left the shortened window early: a retry is stored again.
        [old] = await publish_batches(s.broker, subject, [batches[0]])
        assert not old.duplicate_indexes
