"""End to end: a standalone HTTP gateway process in front of a broker process cuts a huge
batch into gRPC requests under the broker's ``max_message_bytes`` (it used to forward 100,000
events as one message and answer 429 with grpc's text), refuses an event no request can carry
with EVENT_TOO_LARGE, and maps grpc's own size refusal to 413 problem+json."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from lockgate.broker.testing import run_broker
from tests.gateways.gw_kit import unique
from tests.gateways.test_e2e import _start_gateway

pytestmark = pytest.mark.e2e

BATCH = {"Content-Type": "application/cloudevents-batch+json"}


def _doc(i: int, data: str = "") -> dict[str, object]:
    return {"specversion": "1.0", "id": f"x{i}", "source": "/e2e", "type": "t", "data": data}


@pytest_asyncio.fixture
async def gateway_url() -> AsyncIterator[str]:
    async with run_broker() as b:
        proc, where = await _start_gateway(
            "http", "--broker", b.target, "--listen", "127.0.0.1:0", "--max-body-bytes", "16000000"
        )
        try:
            yield f"http://{where}"
        finally:
            proc.terminate()
            await proc.wait()


async def test_a_batch_of_100000_events_is_split_and_stored(gateway_url: str) -> None:
    n = 100_000
    body = json.dumps([_doc(i) for i in range(n)])
    url = f"{gateway_url}/v1/subjects/{unique('big.')}/events"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(url, data=body, headers=BATCH) as r:
            answer = await r.json()
            assert r.status == 200, answer
        assert len(answer["ids"]) == n and "0" not in answer["ids"], answer["errors"][:3]
        assert len(set(answer["ids"])) == n
        for pos in (0, n // 2, n - 1):
            async with http.get(f"{gateway_url}/v1/events/{answer['ids'][pos]}") as r:
                assert (await r.json())["event"]["id"] == f"x{pos}"


async def test_an_event_over_the_brokers_message_size_is_refused_before_forwarding(
    gateway_url: str,
) -> None:
    big = "a" * (1 << 20)  # alone over the broker's max_message_bytes of 1 MiB
    url = f"{gateway_url}/v1/subjects/{unique('big.')}/events"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=json.dumps([_doc(0, big)]), headers=BATCH) as r:
            assert r.status == 413
            assert r.content_type == "application/problem+json"
            problem = await r.json()
        assert problem["reason"] == "EVENT_TOO_LARGE"
        assert "max_message_bytes" in problem["detail"]
        # Beside small ones: those are stored (207), the giant refused at its index.
        docs = [_doc(1), _doc(2, big), _doc(3)]
        async with http.post(url, data=json.dumps(docs), headers=BATCH) as r:
            assert r.status == 207
            answer = await r.json()
        assert answer["ids"][1] == "0" and "0" not in (answer["ids"][0], answer["ids"][2])
        assert [(e["index"], e["reason"]) for e in answer["errors"]] == [(1, "EVENT_TOO_LARGE")]


async def test_grpcs_own_size_refusal_is_413_with_a_reason(tmp_path: Path) -> None:
    """A broker with a smaller max_message_bytes than the gateway was told: grpc refuses the
    request with its own text (no reason of ours); the caller gets 413 EVENT_TOO_LARGE, not
    429 with grpc's words."""
    cfg = tmp_path / "broker.toml"
    cfg.write_text("max_message_bytes = 65536\n")
    async with run_broker(extra_args=["--config", str(cfg)]) as b:
        proc, where = await _start_gateway("http", "--broker", b.target, "--listen", "127.0.0.1:0")
        try:
            url = f"http://{where}/v1/subjects/{unique('big.')}/events"
            docs = [_doc(i, "b" * 1000) for i in range(200)]  # 200 KB: one request of 200 KB
            async with (
                aiohttp.ClientSession() as http,
                http.post(url, data=json.dumps(docs), headers=BATCH) as r,
            ):
                problem = await r.json()
                assert r.status == 413, problem
            assert problem["reason"] == "EVENT_TOO_LARGE"
            assert "larger than max" not in problem["detail"]
        finally:
            proc.terminate()
            await proc.wait()
