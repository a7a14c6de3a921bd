"""Read permission holds per delivered subject (issue 8, critical finding): with ``secret.>``
readable only by auditors, a plain key gets no secret event from history (QueryEvents with
``secret.>`` or ``>``, GetEvent), from a replay (``start=all``), from live wildcard delivery or
from a durable's catch-up; over gRPC and the HTTP gateway. A rule that denies one concrete
subject inside a policy that allows the wildcard (``ops.payroll`` in ``ops.>``) is what a
decision on the pattern alone would miss. Real broker process, raw stubs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc
from tests.broker.e2e_kit import Metadata, auth, error_info, event, query_all, subscribe
from tests.broker.test_policy_in_broker import keys_create
from tests.gateways.test_serve import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

POLICIES = """\
policy secret on "secret.>" {
  allow publish
  allow subscribe when "auditor" in principal.roles
}

policy ops on "ops.>" {
  allow publish
  allow subscribe
  deny subscribe when subject[1] == "payroll" unless "auditor" in principal.roles
}
"""

ALL = broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL)


@dataclass
class Env:
    broker: RunningBroker
    stub: broker_pb2_grpc.BrokerServiceStub
    plain: Metadata
    auditor: Metadata
    plain_key: str
    http: str
    ids: dict[str, int]


@pytest_asyncio.fixture(loop_scope="session")
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = tmp_path / "data"
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "read.policy").write_text(POLICIES)
    plain = await keys_create(str(data), "acme", "plain-bot")
    auditor = await keys_create(str(data), "acme", "audit-bot", "auditor")
    port = free_port()
    args = ["--policy-dir", str(pdir), "--http", f"127.0.0.1:{port}"]
    async with (
        run_broker(data_dir=str(data), extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        ids = {}
        for subject in ("secret.payroll", "ops.payroll", "ops.news", "public.note"):
            resp = await stub.PublishOne(
                broker_pb2.PublishOneRequest(subject=subject, event=event(subject)),
                metadata=auth(auditor),
                timeout=10,
            )
            ids[subject] = resp.id
        yield Env(b, stub, auth(plain), auth(auditor), plain, f"http://127.0.0.1:{port}", ids)


def subjects(events: list[broker_pb2.StoredEvent]) -> set[str]:
    return {e.subject for e in events}


async def test_history_queries_return_only_readable_subjects(env: Env) -> None:
    assert subjects(await query_all(env.stub, ">", env.plain)) == {"ops.news", "public.note"}
    assert await query_all(env.stub, "secret.>", env.plain) == []
    assert subjects(await query_all(env.stub, "*.payroll", env.plain)) == set()
    assert subjects(await query_all(env.stub, ">", env.auditor)) == set(env.ids)


async def test_get_event_of_a_denied_subject_is_not_found(env: Env) -> None:
    for subject in ("secret.payroll", "ops.payroll"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await env.stub.GetEvent(
                broker_pb2.GetEventRequest(id=env.ids[subject]), metadata=env.plain, timeout=10
            )
        # The same answer as an id that does not exist: nothing tells that it does.
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    got = await env.stub.GetEvent(
        broker_pb2.GetEventRequest(id=env.ids["secret.payroll"]), metadata=env.auditor, timeout=10
    )
    assert got.event.subject == "secret.payroll"


async def test_replay_and_live_wildcard_deliver_only_readable_subjects(env: Env) -> None:
    sub = await subscribe(env.stub, env.plain, pattern="ops.*", start=ALL)
    try:
        got = await sub.collect(1)
        assert [d.subject for d in got] == ["ops.news"]
        # Live: the denied subject first, then a readable one; only the second arrives.
        for subject in ("ops.payroll", "ops.news"):
            await env.stub.PublishOne(
                broker_pb2.PublishOneRequest(subject=subject, event=event("live")),
                metadata=env.auditor,
                timeout=10,
            )
        got = await sub.collect(1)
        assert [d.subject for d in got] == ["ops.news"]
    finally:
        await sub.close()


async def test_durable_catch_up_and_a_foreign_binder_read_only_their_subjects(env: Env) -> None:
    name = f"d{uuid.uuid4().hex[:8]}"
    sub = await subscribe(env.stub, env.plain, pattern="ops.*", durable=name, start=ALL)
    try:
        got = await sub.collect(1)
        assert [d.subject for d in got] == ["ops.news"]
        await sub.ack([d.id for d in got])
    finally:
        await sub.close()
    # An auditor's durable, polled by the plain key: the payroll event is not handed to it.
    audit = f"a{uuid.uuid4().hex[:8]}"
    resp = await env.stub.Fetch(
        broker_pb2.FetchRequest(durable=audit, pattern="ops.*", start=ALL, max_events=1),
        metadata=env.auditor,
        timeout=10,
    )
    first = [d.subject for d in resp.deliveries]
    assert first == ["ops.payroll"]
    resp = await env.stub.Fetch(
        broker_pb2.FetchRequest(durable=audit, max_events=100), metadata=env.plain, timeout=10
    )
    assert "ops.payroll" not in {d.subject for d in resp.deliveries}


async def test_a_wildcard_pattern_reaching_a_denying_policy_is_refused(env: Env) -> None:
    for pattern in (">", "*.payroll", "*.*", "secret.>"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            sub = await subscribe(env.stub, env.plain, pattern=pattern, start=ALL)
            await sub.close()
        assert error_info(exc.value)[1] == "POLICY_DENIED", pattern


def _http_get(env: Env, path: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(
        env.http + path, headers={"Authorization": "Bearer " + env.plain_key}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_http_history_routes_filter_too(env: Env) -> None:
    status, body = _http_get(env, "/v1/events?subject=%3E&limit=1000")
    assert status == 200, body
    listed = {str(e["subject"]) for e in body["events"]}  # type: ignore[attr-defined]
    assert "ops.news" in listed and not listed & {"secret.payroll", "ops.payroll"}
    status, body = _http_get(env, f"/v1/events/{env.ids['secret.payroll']}")
    assert (status, body.get("reason")) == (404, "NOT_FOUND")


async def test_websocket_replay_and_live_deliver_only_readable_subjects(env: Env) -> None:
    url = env.http.replace("http://", "ws://") + "/v1/ws"
    headers = {"Authorization": "Bearer " + env.plain_key}
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        await ws.send_json({"op": "subscribe", "pattern": "ops.*", "start": "all", "ref": 1})
        ok = await ws.receive_json(timeout=10)
        assert ok["op"] == "ok", ok
        marker = await env.stub.PublishOne(
            broker_pb2.PublishOneRequest(subject="ops.marker", event=event("m")),
            metadata=env.auditor,
            timeout=10,
        )
        seen: list[str] = []
        while True:  # everything before the marker, replayed and live, then the marker
            msg = await ws.receive_json(timeout=10)
            assert msg["op"] == "event", msg
            seen.append(msg["subject"])
            if msg["id"] == str(marker.id):
                break
        assert "ops.payroll" not in seen and "ops.news" in seen
