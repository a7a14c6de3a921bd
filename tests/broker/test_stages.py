"""The stage record of the publish path (``broker.stages``), used by the bench's latency
breakdown: off by default, and when on, one row per stored batch in stage order."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from lockgate.broker import pipeline, stages, wire
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import cloudevent_pb2

WHO = Principal(org="o", agent="a", roles=frozenset())


def _event(n: int) -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=f"e{n}", source="t", spec_version="1.0", type="t")


def test_off_unless_a_file_is_named() -> None:
    log = stages.StageLog()
    assert not log.enabled
    log.dump()  # nothing to write, no file


def test_collector_pauses_are_recorded(tmp_path: Path) -> None:
    log = stages.StageLog(str(tmp_path / "gc.jsonl"))
    log.watch_gc()
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(log._on_gc)
    log.dump()
    rows = [json.loads(line) for line in Path(log.path).read_text().splitlines()]
    (generation, start, end) = rows[-1]["gc"]
    assert generation == 2 and start <= end


def test_first_id_reads_the_first_delivery_of_a_body() -> None:
    subject = wire.subject_field("a.b")
    body = b"".join(wire.delivery_frames([1 << 60, (1 << 60) + 1], subject, [b"x", b"y"]))
    assert wire.first_id(body) == 1 << 60
    assert wire.first_id(wire.delivery_frame(300, subject, b"z")) == 300


async def test_a_published_batch_records_its_stages_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = stages.StageLog(str(tmp_path / "stages.jsonl"))
    monkeypatch.setattr(pipeline, "STAGES", log)
    broker = Broker(
        Config(data_dir=str(tmp_path), fsync="never"), SqliteStore(tmp_path, fsync="never")
    )
    await broker.start()
    try:
        sub = await broker.subscribe_ephemeral(WHO, "a.>", "")
        received = stages.now()
        prepared = await broker.prepare(WHO, "a.b", [_event(1), _event(2)], received)
        outcome = await broker.commit(prepared)
        assert await sub.outbox.take()  # routed once stored
        untimed = await broker.commit(await broker.prepare(WHO, "a.b", [_event(3)]))
    finally:
        await broker.stop()
    log.dump()
    rows = [json.loads(line)["batch"] for line in Path(log.path).read_text().splitlines()]
    assert len(rows) == 1 and untimed.ids  # a publish without a receive time is not recorded
    first, *marks = rows[0]
    assert first == outcome.ids[0] and marks[0] == received
    assert len(marks) == 6 and marks == sorted(marks)  # received ... routed, in order
