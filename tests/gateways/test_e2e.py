"""End to end: a real ``lockgate serve`` process, standalone gateways on ``RemoteAPI``, and a
broker restart under a Redis stream ingest (no event lost, none acked twice upstream)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from lockgate.broker.api import DurableOptions
from lockgate.broker.testing import run_broker
from lockgate.gateways._remote import RemoteAPI
from lockgate.gateways.redis import RedisIngest, RedisSettings
from tests.gateways.gw_kit import unique
from tests.support import eventually

pytestmark = pytest.mark.e2e


async def _lockgate(*args: str, key: str) -> str:
    """The ``lockgate`` CLI's output (it must succeed), run with API key ``key``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        *args,
        env={**os.environ, "LOCKGATE_API_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    return out.decode()


async def _start_gateway(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockgate.broker.cli",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert b"ready" in line, line
    return proc, line.decode().split(" on ")[-1].strip()


async def test_standalone_http_gateway_on_a_real_broker() -> None:
    async with run_broker() as b:
        proc, where = await _start_gateway("http", "--broker", b.target, "--listen", "127.0.0.1:0")
        url = f"http://{where}"
        try:
            async with aiohttp.ClientSession() as http:
                subject, durable = unique("e2e."), unique("d")
                r = await http.put(f"{url}/v1/subscriptions/{durable}", json={"pattern": subject})
                assert r.status == 200, await r.text()
                doc = {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "/e",
                    "type": "t",
                    "data": {"a": 1},
                }
                r = await http.post(
                    f"{url}/v1/subjects/{subject}/events",
                    data=json.dumps(doc),
                    headers={"Content-Type": "application/cloudevents+json"},
                )
                assert r.status == 200, await r.text()
                (event_id,) = (await r.json())["ids"]
                got = await (await http.get(f"{url}/v1/events/{event_id}")).json()
                assert got["event"]["data"] == {"a": 1}
                page = await (
                    await http.get(f"{url}/v1/subscriptions/{durable}/events?wait=2s")
                ).json()
                assert [e["id"] for e in page["events"]] == [event_id]
                r = await http.post(
                    f"{url}/v1/subscriptions/{durable}/acks", json={"ack": [event_id]}
                )
                assert r.status == 200, await r.text()
                # Errors keep their reasons across gRPC.
                r = await http.get(f"{url}/v1/subscriptions/nope/events")
                assert (
                    r.status == 404
                    and (await r.json(content_type=None))["reason"] == "UNKNOWN_DURABLE"
                )
                r = await http.post(
                    f"{url}/v1/subjects/{subject}/events",
                    data=json.dumps([{"specversion": "1.0", "id": "2", "source": "s"}]),
                    headers={"Content-Type": "application/cloudevents-batch+json"},
                )
                assert r.status == 400
                assert (await r.json(content_type=None))["reason"] == "MISSING_ATTRIBUTE"
                r = await http.post(
                    f"{url}/v1/subjects/{subject}/events",
                    data=b"{",
                    headers={"Content-Type": "application/cloudevents+json"},
                )
                assert r.status == 400
                r = await http.get(f"{url}/v1/events?subject={subject}")
                assert len((await r.json())["events"]) == 1  # nothing else reached the log
                # WebSocket through the standalone gateway: subscribe, publish, receive.
                async with http.ws_connect(f"{url}/v1/ws") as ws:
                    await ws.send_json({"op": "subscribe", "pattern": subject})
                    assert (await ws.receive_json(timeout=5))["op"] == "ok"
                    await ws.send_json({"op": "publish", "subject": subject, "data": 5})
                    frames = [await ws.receive_json(timeout=5) for _ in range(2)]
                    assert {f["op"] for f in frames} == {"ok", "event"}
        finally:
            proc.terminate()
            await proc.wait()


async def test_broker_restart_under_redis_stream_ingest(redis_url: str) -> None:
    r = aioredis.from_url(redis_url)
    stream, subject = unique("lg:e2e:"), unique("rs.")
    n = 300
    async with run_broker(extra_args=["--fsync", "always"]) as b:
        api = RemoteAPI(b.target)
        settings = RedisSettings(
            url=redis_url,
            streams={stream: subject},
            dead_letter=stream + ":dlq",
            block=0.1,
            batch=25,
            retry=0.1,
        )
        ingest = RedisIngest(api, settings)
        await ingest.start()

        async def pending() -> int:
            return int((await r.xpending(stream, settings.group))["pending"])

        for i in range(n // 2):
            await r.xadd(stream, {"data": json.dumps(i)})
        await eventually(lambda: ingest.metrics["xacked"] >= 25)  # the ingest is under way
        await b.kill()  # a crash, mid-stream
        for i in range(n // 2, n):
            await r.xadd(stream, {"data": json.dumps(i)})
        await eventually(pending)  # the ingest read entries it cannot publish now
        await b.restart()

        async def all_acked() -> bool:
            return ingest.metrics["xacked"] >= n and await pending() == 0

        await eventually(all_acked, timeout=30, interval=0.1, what=f"{n} entries acked")
        await ingest.stop()
        events: list[int] = []
        after = 0
        while True:
            page, after = await api.query(None, subject, after_id=after, limit=1000)
            events += [int(e.event.text_data) for e in page]
            if not after:
                break
        await api.close()
    assert sorted(events) == list(range(n))  # none lost, none stored twice
    assert ingest.metrics["xacked"] == n and ingest.metrics["xack_short"] == 0
    assert await r.llen(stream + ":dlq") == 0
    await r.delete(stream)
    await r.aclose()


async def test_standalone_webhook_dispatcher_polls_a_real_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The standalone dispatcher signs with the durable's own secrets and names its org, as
    the broker's own dispatcher does: both come from the broker (GetWebhookSecrets), with no
    secret configured; a rotation reaches the deliveries after ``refresh``. The URL's token
    (a query value) reads <redacted> over gRPC, in the CLI and in no audit record, and the
    dispatcher gets it whole with the secrets, so its POSTs carry it."""
    from aiohttp import web

    from lockgate.clients import Client, FailedPrecondition, NotFound, PermissionDenied
    from lockgate.clients._webhook import verify_webhook
    from lockgate.gateways._site import start_site
    from lockgate.gateways.webhook import PollingWebhookDispatcher, WebhookSettings
    from tests.broker.test_policy_in_broker import keys_create
    from tests.gateways.gw_kit import event

    got: list[tuple[dict[str, str], bytes]] = []
    queries: set[str] = set()

    async def handle(request: web.Request) -> web.Response:
        queries.add(request.query_string)
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, port = await start_site(app, "127.0.0.1:0")
    monkeypatch.setenv("LOCKGATE_WEBHOOK_ALLOW_PRIVATE", "true")
    data = str(tmp_path / "data")
    acme = await keys_create(data, "acme", "lead", "org-admin")
    agent = await keys_create(data, "acme", "worker")
    evil = await keys_create(data, "evil", "boss", "org-admin")
    try:
        async with run_broker(data_dir=data) as b:
            api = RemoteAPI(b.target)
            subject, durable = unique("pw."), unique("d")
            url = f"http://127.0.0.1:{port}/hook?token=pw-s3cr3t"
            hook = DurableOptions(endpoint_url=url)
            view = await api.create_durable(acme, durable, subject, hook)
            secret = view.webhook_secret
            assert secret.startswith("whsec_")
            shown = url.replace("pw-s3cr3t", "<redacted>")
            assert view.endpoint_url == shown
            settings = WebhookSettings(allow_private=True)  # no secret: the broker's
            dispatcher = PollingWebhookDispatcher(api, acme, settings)
            dispatcher.refresh = 0.2
            await dispatcher.start()
            try:
                await api.publish(acme, subject, [event(1, data='{"w": 1}')])
                await eventually(lambda: len(got) == 1)
                headers, body = got[0]
                verify_webhook(secret, headers, body)
                doc = json.loads(body)
                assert doc["data"] == {"w": 1}
                assert (doc["lockgateorg"], doc["lockgatedurable"], doc["lockgatesubject"]) == (
                    "acme",
                    durable,
                    subject,
                )

                async def acked() -> bool:  # nothing comes back from a fetch
                    info = next(d for d in await api.list_durables(acme) if d.name == durable)
                    return info.pending_count == 0

                await eventually(acked, interval=0.1)
                async with Client(b.target, api_key=acme) as c:
                    new = await c.admin.rotate_webhook_secret(durable, grace=3600)

                async def signed_with_the_new_one() -> bool:
                    await api.publish(acme, subject, [event(2)])
                    await eventually(lambda: len(got) >= 2)
                    try:
                        verify_webhook(new, *got[-1])
                    except Exception:
                        return False
                    return True

                await eventually(signed_with_the_new_one, interval=0.3)
                verify_webhook(secret, *got[-1])  # the old one signs beside it (its grace)
            finally:
                await dispatcher.stop()
                await api.close()
            # Who may read a durable's secrets: its org's org-admin only.
            async with Client(b.target, api_key=agent) as c:
                with pytest.raises(PermissionDenied) as denied:
                    await c.admin.webhook_secrets(durable)
                assert denied.value.reason == "PERMISSION_DENIED"
            async with Client(b.target, api_key=evil) as c:
                with pytest.raises(NotFound) as missing:  # evil's namespace has no such one
                    await c.admin.webhook_secrets(durable)
                assert missing.value.reason == "UNKNOWN_DURABLE"
            async with Client(b.target, api_key=acme) as c:
                plain = unique("plain")
                await c.admin.create_durable(plain, subject)
                with pytest.raises(FailedPrecondition):
                    await c.admin.webhook_secrets(plain)
                ws = await c.admin.webhook_secrets(durable)
                assert (ws.org, ws.secrets, ws.endpoint_url) == ("acme", [new, secret], url)
                assert (await c.admin.get_durable(durable)).durable.endpoint_url == shown
                listed = [d.endpoint_url for d in await c.admin.list_durables()]
                assert shown in listed and url not in listed

                async def audited() -> set[tuple[str, str]]:
                    reads = [r async for r in c.admin.audit(action="webhook_secret.read")]
                    return {(r.org, r.target) for r in reads}

                assert await eventually(audited) == {("acme", durable)}
                assert not [r async for r in c.admin.audit() if "pw-s3cr3t" in repr(r)]
            cli = await _lockgate("durables", "info", durable, "--server", b.target, key=acme)
            assert shown in cli and "pw-s3cr3t" not in cli
        assert queries == {"token=pw-s3cr3t"}  # every POST carried the stored token
    finally:
        await runner.cleanup()
