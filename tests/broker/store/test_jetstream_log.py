"""The JetStream log beyond the EventLog contract (its format: tests/broker/test_logformat.py):
duplicate batches,
failing closed when NATS is gone (and resuming), and a three-server cluster with an R3
stream losing a server under load with nothing acknowledged lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockgate.broker import wire
from lockgate.broker.errors import BrokerError, InvalidArgument, Unavailable
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch, LogPosition
from lockgate.broker.store.jetstream import JetStreamLog, events_past_age, events_past_count
from tests.broker.contracts.contract_stores import make_batch
from tests.support.nats_servers import nats_cluster
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually


def test_retention_cuts() -> None:
    counts = [(1, 10, 2), (2, 20, 3), (5, 30, 1)]
    assert events_past_age(counts, 15) == (2, 2)
    assert events_past_age(counts, 31) == (6, 6)
    assert events_past_age(counts, 5) == (1, 0)
    assert events_past_count(counts, 4) == (2, 2)
    assert events_past_count(counts, 3) == (3, 5)
    assert events_past_count(counts, 6) == (1, 0)
    assert events_past_count(counts, 0) == (6, 6)


@contextlib.asynccontextmanager
async def _log(url: str, name: str, **kw: object) -> AsyncIterator[JetStreamLog]:
    log = JetStreamLog(url, stream=name, root=name.lower(), **kw)  # type: ignore[arg-type]
    await log.open()
    try:
        yield log
    finally:
        await log.close()


async def test_a_retried_batch_is_stored_once(nats_url: str) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with _log(nats_url, name) as log:
        try:
            batch = make_batch(IdGenerator(0), "acme", "orders", 2)
            (first,) = await log.append([batch])
            (again,) = await log.append([batch])  # Nats-Msg-Id: the same first id
            assert again == first
            assert len(await log.read_log("acme", LogPosition(0))) == 1
        finally:
            await log._api(f"STREAM.DELETE.{name}")


async def test_another_nodes_commits_move_the_committed_sequence(nats_url: str) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with _log(nats_url, name) as here, _log(nats_url, name) as there:
        try:
            gen = IdGenerator(0)
            for _ in range(3):
                (seq,) = await here.append([make_batch(gen, "acme", "orders", 1)])
                await eventually(lambda s=seq: there.committed_seq() >= s)  # type: ignore[misc]
            assert [b.seq for b in await there.read_log("acme", LogPosition(0))] == [1, 2, 3]
        finally:
            await here._api(f"STREAM.DELETE.{name}")


async def test_a_follower_gets_every_nodes_commits_in_order_with_their_events(
    nats_url: str,
) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    got: list[tuple[int, Batch]] = []
    follower = JetStreamLog(nats_url, stream=name, root=name.lower())
    follower.follow_commits(lambda b, seq: got.append((seq, b)))
    await follower.open()
    try:
        async with _log(nats_url, name) as other:
            gen = IdGenerator(0)
            sent: dict[int, Batch] = {}
            for n in range(6):
                log = follower if n % 2 else other  # its own commits and another node's
                batch = make_batch(gen, "acme", f"orders.{n}", n + 1)
                (seq,) = await log.append([batch])
                sent[seq] = batch
            await eventually(lambda: len(got) == 6, what="every commit followed")
            assert [seq for seq, _ in got] == sorted(sent)
            for seq, b in got:
                assert (b.seq, b.subject, b.first_id, b.count) == (
                    seq,
                    sent[seq].subject,
                    sent[seq].first_id,
                    sent[seq].count,
                )
                assert b.body == sent[seq].body
                assert len(wire.split_frames(b.body)) == b.count
    finally:
        await follower._api(f"STREAM.DELETE.{name}")
        await follower.close()


async def test_a_batch_over_the_servers_max_payload_is_refused_not_retried(
    nats_url: str,
) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with _log(nats_url, name) as log:
        try:
            limit = log.nc.max_payload
            (i,) = IdGenerator(0).next_block(1)
            body = wire.delivery_frame(i, wire.subject_field("big"), b"\x0a" + b"x" * limit)
            with pytest.raises(InvalidArgument) as err:
                await log.append([Batch(i, i, "acme", "big", 1, "v1", body)])
            assert err.value.reason == "EVENT_TOO_LARGE"
            assert "max_payload" in err.value.message
            (seq,) = await log.append([make_batch(IdGenerator(1), "acme", "small", 1)])
            assert seq == 1  # nothing was stored for it
        finally:
            await log._api(f"STREAM.DELETE.{name}")


async def test_no_stream_fails_closed(nats_url: str) -> None:
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with _log(nats_url, name, timeout=2.0) as log:
        await log._api(f"STREAM.DELETE.{name}")
        with pytest.raises(Unavailable) as err:
            await log.append([make_batch(IdGenerator(0), "acme", "orders", 1)])
        assert err.value.reason == "STORE_UNAVAILABLE"


async def test_nats_down_fails_closed_then_resumes(tmp_path: Path) -> None:
    async with (
        nats_cluster(tmp_path, size=1) as nats,
        _log(nats.url, "LGT_DOWN", timeout=1.0) as log,
    ):
        gen = IdGenerator(0)
        (stored,) = await log.append([make_batch(gen, "acme", "a", 1)])
        nats.kill(0)
        with pytest.raises(Unavailable) as err:
            await log.append([make_batch(gen, "acme", "a", 1)])
        assert err.value.reason == "STORE_UNAVAILABLE"
        nats.start(0)  # same port, same store

        async def appended() -> bool:
            with contextlib.suppress(Unavailable):
                await log.append([make_batch(gen, "acme", "a", 1)])
                return True
            return False

        await eventually(appended, timeout=15)
        got = await log.read_log("acme", LogPosition(0))
        assert got[0].seq == stored


async def test_a_silent_backbone_fails_closed_then_resumes(nats_url: str) -> None:
    """NATS stops answering (a stalled link, the connection still open): the append fails
    with STORE_UNAVAILABLE once its ack is overdue, never acknowledged; a new link
    resumes."""
    name = "LGT_" + uuid.uuid4().hex[:12]
    async with (
        TcpProxy(nats_url.removeprefix("nats://")) as proxy,
        _log(f"nats://{proxy.target}", name, timeout=1.0) as log,
    ):
        try:
            gen = IdGenerator(0)
            await log.append([make_batch(gen, "acme", "a", 1)])
            proxy.stall()
            with pytest.raises(Unavailable) as err:
                await log.append([make_batch(gen, "acme", "a", 1)])
            assert err.value.reason == "STORE_UNAVAILABLE"
            proxy.resume()
            await proxy.cut()  # the client notices and reconnects

            async def appended() -> bool:
                with contextlib.suppress(Unavailable):
                    await log.append([make_batch(gen, "acme", "a", 1)])
                    return True
                return False

            await eventually(appended, timeout=15)
        finally:
            with contextlib.suppress(Unavailable):
                await log._api(f"STREAM.DELETE.{name}")


async def test_r3_stream_loses_a_server_under_load(tmp_path: Path) -> None:
    """Three servers, an R3 stream; appends run all along; the stream leader is killed.
    Appends go on (some fail while a new leader is elected: never acknowledged) and every
    acknowledged batch is in the log afterwards, at the sequence its ack gave."""
    async with (
        nats_cluster(tmp_path, size=3) as nats,
        _log(nats.url, "LGT_R3", replicas=3, timeout=2.0) as log,
    ):
        gen = IdGenerator(0)
        acked: dict[int, int] = {}  # first id -> seq
        failures = 0
        stop = asyncio.Event()

        async def publisher() -> None:
            nonlocal failures
            while not stop.is_set():
                batches = [make_batch(gen, "acme", f"load.{n % 4}", 5) for n in range(10)]
                try:
                    seqs = await log.append(batches)
                except Unavailable:
                    failures += 1
                    await asyncio.sleep(0.05)
                    continue
                for b, s in zip(batches, seqs, strict=True):
                    acked[b.first_id] = s

        tasks = [asyncio.create_task(publisher()) for _ in range(4)]
        await eventually(lambda: len(acked) >= 200)
        info = await log._api("STREAM.INFO.LGT_R3")
        leader = info["cluster"]["leader"]
        nats.kill(int(leader[1:]))
        before = len(acked)
        await eventually(lambda: len(acked) >= before + 200, timeout=15)
        stop.set()
        await asyncio.gather(*tasks)

        async def read_all() -> dict[int, int] | None:
            # Reads create consumers, which wait for the cluster's new meta leader too.
            stored: dict[int, int] = {}
            pos = LogPosition(0)
            try:
                while page := await log.read_log("acme", pos, limit=1000):
                    stored.update((b.first_id, b.seq) for b in page)
                    pos = LogPosition(page[-1].seq + 1)
            except Unavailable:
                return None
            return stored

        stored = await eventually(read_all, timeout=15)
        lost = {i: s for i, s in acked.items() if stored.get(i) != s}
        assert not lost, f"{len(lost)} acknowledged batches missing ({failures} failed appends)"


async def test_a_nats_token_in_the_url_is_never_shown() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = JetStreamLog(f"nats://s3cr3tT0ken@127.0.0.1:{port}", stream="LGT_TOKEN")
    with pytest.raises(BrokerError) as exc:
        await log.open()
    assert "s3cr3tT0ken" not in str(exc.value)
    assert "<redacted>@127.0.0.1" in exc.value.message
