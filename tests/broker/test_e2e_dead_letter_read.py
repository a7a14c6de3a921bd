"""Reading a dead letter needs read permission on its original subject too (issue 8): with
``secret.>`` readable only by auditors and ``$dlq.>`` readable by everyone, a plain key gets
no dead letter of a secret event by any read path (live, replay, query, GetEvent, a durable
on ``$dlq.>``, HTTP, WebSocket), and an auditor does. Real broker process, raw stubs."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf import duration_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2, broker_pb2_grpc
from tests.broker.e2e_kit import auth, error_info, event, query_all, subscribe
from tests.broker.test_policy_in_broker import keys_create
from tests.gateways.test_serve import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

POLICIES = """\
policy secret on "secret.>" {
  allow publish
  allow subscribe when "auditor" in principal.roles
}

policy public on "public.>" {
  allow publish
  allow subscribe
}

policy dead on "$dlq.>" {
  allow subscribe
}
"""

ALL = broker_pb2.StartPosition(policy=broker_pb2.START_POLICY_ALL)
ORIGINAL = "lockgateoriginalsubject"


def origin(ev: broker_pb2.CloudEvent) -> str:
    return ev.attributes[ORIGINAL].ce_string


async def test_a_dead_letter_needs_its_original_subjects_read_permission(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "read.policy").write_text(POLICIES)
    plain_key = await keys_create(str(data), "acme", "plain-bot")
    plain = auth(plain_key)
    auditor = auth(await keys_create(str(data), "acme", "audit-bot", "auditor"))
    port = free_port()
    args = ["--policy-dir", str(pdir), "--http", f"127.0.0.1:{port}"]
    async with (
        run_broker(data_dir=str(data), extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        audit_live = await subscribe(stub, auditor, pattern="$dlq.>")
        plain_live = await subscribe(stub, plain, pattern="$dlq.doomed")
        plain_durable = await subscribe(stub, plain, pattern="$dlq.>", durable="plain-dlq")
        doomed = await subscribe(
            stub,
            auditor,
            pattern="*.x",
            durable="doomed",
            ack_wait=duration_pb2.Duration(nanos=100_000_000),
            max_deliveries=1,
        )
        letters: dict[str, int] = {}
        # The secret one is dead-lettered first: had it leaked, it would come first.
        for subject in ("secret.x", "public.x"):
            await stub.PublishOne(
                broker_pb2.PublishOneRequest(subject=subject, event=event(subject)),
                metadata=auditor,
                timeout=10,
            )
            [letter] = await audit_live.collect(1, 10)
            assert (letter.subject, origin(letter.event)) == ("$dlq.doomed", subject)
            letters[subject] = letter.id

        # Live (a literal pattern and a durable's wildcard): only the readable one.
        assert [d.id for d in await plain_live.collect(1, 10)] == [letters["public.x"]]
        assert [d.id for d in await plain_durable.collect(1, 10, ack=True)] == [letters["public.x"]]
        # Replay.
        replay = await subscribe(stub, plain, pattern="$dlq.>", start=ALL)
        assert [d.id for d in await replay.collect(1, 10)] == [letters["public.x"]]
        audit_replay = await subscribe(stub, auditor, pattern="$dlq.>", start=ALL)
        got = await audit_replay.collect(2, 10)
        assert [d.id for d in got] == [letters["secret.x"], letters["public.x"]]
        # Query and GetEvent.
        assert [e.id for e in await query_all(stub, "$dlq.>", plain)] == [letters["public.x"]]
        assert [e.id for e in await query_all(stub, "$dlq.>", auditor)] == [
            letters["secret.x"],
            letters["public.x"],
        ]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetEvent(
                broker_pb2.GetEventRequest(id=letters["secret.x"]), metadata=plain, timeout=10
            )
        assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        got_event = await stub.GetEvent(
            broker_pb2.GetEventRequest(id=letters["secret.x"]), metadata=auditor, timeout=10
        )
        assert origin(got_event.event.event) == "secret.x"
        for sub in (audit_live, plain_live, plain_durable, doomed, replay, audit_replay):
            await sub.close()

        # HTTP.
        http = f"http://127.0.0.1:{port}"

        def get(path: str) -> tuple[int, dict[str, object]]:
            req = urllib.request.Request(
                http + path, headers={"Authorization": "Bearer " + plain_key}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        status, body = get("/v1/events?limit=1000&subject=" + urllib.parse.quote("$dlq.>"))
        assert status == 200, body
        assert [str(e["id"]) for e in body["events"]] == [str(letters["public.x"])]  # type: ignore[attr-defined]
        status, body = get(f"/v1/events/{letters['secret.x']}")
        assert (status, body.get("reason")) == (404, "NOT_FOUND")

        # WebSocket (a replay).
        url = http.replace("http://", "ws://") + "/v1/ws"
        headers = {"Authorization": "Bearer " + plain_key}
        async with aiohttp.ClientSession() as s, s.ws_connect(url, headers=headers) as ws:
            await ws.send_json({"op": "subscribe", "pattern": "$dlq.>", "start": "all", "ref": 1})
            ok = await ws.receive_json(timeout=10)
            assert ok["op"] == "ok", ok
            msg = await ws.receive_json(timeout=10)
            assert (msg["op"], msg["id"]) == ("event", str(letters["public.x"])), msg
