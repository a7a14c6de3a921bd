"""The message logger's tests: their own JetStream server (so LOCKGATE_LOG and the
``lockgate-logger`` consumer are theirs alone), a fresh stream per test, and batches in the
log format built the way a node builds them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js.api import StreamConfig

from lockgate.broker import wire
from lockgate.broker.backbone.logformat import LOG_STREAM, encode_batch
from lockgate.broker.ids import IdGenerator
from lockgate.broker.store import Batch
from lockgate.broker.v1 import cloudevent_pb2
from tests.support.tools import require_tool

CloudEvent = cloudevent_pb2.CloudEvent

_IDS = IdGenerator(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def natsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JetStream server on a loopback port, for this module's tests."""
    server = require_tool("nats-server", "LOCKGATE_TEST_NATS_SERVER")
    store = tmp_path_factory.mktemp("js")
    port = _free_port()
    proc = subprocess.Popen(
        [server, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"nats-server exited with {proc.returncode}")
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest_asyncio.fixture
async def nc(natsd: str) -> AsyncIterator[Client]:
    """A connection with a fresh, empty ``LOCKGATE_LOG`` stream."""
    client = await nats.connect(natsd, max_reconnect_attempts=-1)
    js = client.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(LOG_STREAM)
    await js.add_stream(StreamConfig(name=LOG_STREAM, subjects=["lglog.>"]))
    yield client
    await client.close()


def event(eid: str, data: str | bytes | None = None, content_type: str = "") -> CloudEvent:
    ev = CloudEvent(id=eid, source="/test", spec_version="1.0", type="t.created")
    if isinstance(data, str):
        ev.text_data = data
    elif isinstance(data, bytes):
        ev.binary_data = data
    if content_type:
        ev.attributes["datacontenttype"].ce_string = content_type
    return ev


def make_batch(org: str, subject: str, events: Sequence[CloudEvent], policy: str = "v1") -> Batch:
    ids = _IDS.next_block(len(events))
    raw = [e.SerializeToString() for e in events]
    body = b"".join(wire.delivery_frames(ids, wire.subject_field(subject), raw))
    return Batch(ids[0], ids[-1], org, subject, len(ids), policy, body, '["bot",[]]')


async def append(client: Client, batch: Batch, *, msg_id: str | None = None) -> int:
    """Stores ``batch`` in the log as a node does; returns its stream sequence."""
    subject, headers, body = encode_batch(batch)
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    ack = await client.jetstream().publish(subject, body, headers=headers)
    return int(ack.seq)
