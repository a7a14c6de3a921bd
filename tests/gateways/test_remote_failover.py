"""The gateways' ``--broker`` takes several targets as the client does: ``RemoteAPI`` moves a
call that meets UNAVAILABLE to the next broker (two real ``lockgate serve`` processes, the
first killed with SIGKILL), and a standalone gateway in front of a dead first target serves
through the second."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from lockgate.broker import errors as be
from lockgate.broker.testing import run_broker
from lockgate.gateways._remote import RemoteAPI
from tests.clients.test_failover import closed_port
from tests.gateways.gw_kit import event, unique
from tests.gateways.test_e2e import _start_gateway

pytestmark = pytest.mark.e2e


async def test_remote_api_fails_over_to_the_next_broker() -> None:
    async with run_broker() as first, run_broker() as second:
        api = RemoteAPI(f"{first.target},{second.target}")
        try:
            subject = unique("fo.")
            assert (await api.publish(None, subject, [event(1)])).ids
            assert api.target == first.target
            await first.kill()
            result = await asyncio.wait_for(api.publish(None, subject, [event(2)]), 5)
            assert api.target == second.target and result.ids
            sub = await asyncio.wait_for(api.subscribe(None, subject), 5)
            await sub.close()
            stored, _ = await api.query(None, subject)
            assert [e.id for e in stored] == result.ids  # the second broker's log
        finally:
            await api.close()


async def test_encoded_publishes_fail_over_on_their_stream() -> None:
    """``publish_encoded`` keeps a ``Publish`` stream open: when its broker dies, the stream
    is opened again on the next target and the publish completes there."""
    async with run_broker() as first, run_broker() as second:
        api = RemoteAPI(f"{first.target},{second.target}")
        try:
            subject = unique("fo.enc.")
            raw = [event(1).SerializeToString()]
            assert (await api.publish_encoded(None, subject, raw)).ids[0]
            await first.kill()
            result = await asyncio.wait_for(
                api.publish_encoded(None, subject, [event(2).SerializeToString()]), 10
            )
            assert api.target == second.target and result.ids[0] and not result.errors
            stored, _ = await api.query(None, subject)
            assert [e.id for e in stored] == result.ids
        finally:
            await api.close()


async def test_encoded_publishes_to_no_broker_are_unavailable() -> None:
    api = RemoteAPI(f"127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(be.Unavailable):
            await api.publish_encoded(None, "fo.none", [event(1).SerializeToString()])
    finally:
        await api.close()


async def test_a_standalone_gateway_serves_through_the_second_target() -> None:
    dead = f"127.0.0.1:{closed_port()}"
    async with run_broker() as alive:
        proc, where = await _start_gateway(
            "http", "--broker", f"{dead},{alive.target}", "--listen", "127.0.0.1:0"
        )
        try:
            async with aiohttp.ClientSession() as http:
                doc = {"specversion": "1.0", "id": "1", "source": "/e", "type": "t", "data": 1}
                r = await http.post(
                    f"http://{where}/v1/subjects/fo.gw/events",
                    data=json.dumps(doc),
                    headers={"Content-Type": "application/cloudevents+json"},
                )
                assert r.status == 200, await r.text()
        finally:
            proc.terminate()
            await proc.wait()
