"""A huge HTTP batch does not stall the event loop: its body is decoded in a worker thread and
published in slices (one batch of 100,000 events held the loop 1.2 s)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from lockgate.gateways import _http_publish as http_publish
from lockgate.gateways.http import HttpSettings
from tests.broker.test_policies import LoopLag
from tests.gateways.gw_kit import local_broker, unique


async def test_a_batch_of_50000_events_is_decoded_off_the_loop_and_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    parse = http_publish._parse

    def spy(*args: object) -> object:
        threads.append(threading.get_ident())
        return parse(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(http_publish, "_parse", spy)
    n = 50_000
    docs = [{"specversion": "1.0", "id": f"b{i}", "source": "/big", "type": "t"} for i in range(n)]
    body = json.dumps(docs).encode()
    settings = HttpSettings(max_body_bytes=len(body) + 1)
    async with local_broker(tmp_path, settings=settings) as env:
        url = f"{env.url}/v1/subjects/{unique('big.')}/events"
        headers = {"Content-Type": "application/cloudevents-batch+json"}
        started = time.monotonic()
        async with (
            LoopLag() as lag,
            aiohttp.ClientSession() as s,
            s.post(url, data=body, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            answer = await r.json()
        took = time.monotonic() - started
        assert len(answer["ids"]) == n and "0" not in answer["ids"]
        assert len(set(answer["ids"])) == n
        assert threads and threading.get_ident() not in threads
        # Generous for a loaded machine; before, the loop stood still for most of `took`.
        assert lag.max_stall < max(0.5, took / 4), (lag.max_stall, lag.max_gap, took)
        # The last event is stored and readable.
        async with env.session.get(f"{env.url}/v1/events/{answer['ids'][-1]}") as r:
            assert (await r.json())["event"]["id"] == f"b{n - 1}"


async def test_a_small_body_is_decoded_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hop for the common small publish (it would cost more than the decode)."""
    threads: list[int] = []
    parse = http_publish._parse

    def spy(*args: object) -> object:
        threads.append(threading.get_ident())
        return parse(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(http_publish, "_parse", spy)
    async with local_broker(tmp_path) as env:
        doc = {"specversion": "1.0", "id": "s1", "source": "/s", "type": "t"}
        async with env.session.post(
            f"{env.url}/v1/subjects/small.x/events",
            data=json.dumps(doc),
            headers={"Content-Type": "application/cloudevents+json"},
        ) as r:
            assert r.status == 200
        assert threads == [threading.get_ident()]
