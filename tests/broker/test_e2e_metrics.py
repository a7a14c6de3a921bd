"""Prometheus ``/metrics`` of a real ``lockgate serve`` under traffic, read with the
Prometheus text-format parser: the counters move by what was published and delivered, the
publish latency is a histogram, a durable's depth is a gauge. A non-loopback
``metrics_listen`` is refused in one sentence. The HTTP gateway's ``/metrics`` serves the
same to the admin role and refuses other keys (problem+json)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2_grpc
from tests.broker.e2e_kit import auth, event, publish_batches, subscribe, unique
from tests.broker.test_policy_in_broker import keys_create
from tests.support.nats_servers import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

Scrape = dict[str, list[tuple[dict[str, str], float]]]
_METRICS_LINE = re.compile(r"metrics on (http://\S+/metrics)")


def _metrics_url(b: RunningBroker) -> str:
    for line in b.output:
        if m := _METRICS_LINE.search(line.decode(errors="replace")):
            return m.group(1)
    raise AssertionError("no metrics line in the broker's output")


def _scrape(url: str, key: str | None = None) -> Scrape:
    """``{sample name: [(labels, value)]}`` of one scrape."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
        text = resp.read().decode()
    out: Scrape = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _total(scrape: Scrape, name: str, **labels: str) -> float:
    return sum(
        v for got, v in scrape.get(name, []) if all(got.get(k) == w for k, w in labels.items())
    )


async def test_metrics_move_with_traffic() -> None:
    args = ["--metrics-listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    async with run_broker(extra_args=args) as b:
        url = await eventually(lambda: _metrics_url(b) if b.output else None)
        before = await asyncio.to_thread(_scrape, url)
        async with grpc.aio.insecure_channel(b.target) as ch:
            stub = broker_pb2_grpc.BrokerServiceStub(ch)
            subject = unique("metrics")
            sub = await subscribe(stub, pattern=subject)
            name = unique("d").replace(".", "-")
            durable = await subscribe(stub, pattern=subject, durable=name)
            batches = [[event(str(i)) for i in range(5)] for _ in range(3)]
            await publish_batches(stub, subject, batches)
            assert len(await sub.collect(15)) == 15
            assert len(await durable.collect(15)) == 15  # not acked: 15 pending

            def moved() -> Scrape | None:
                after = _scrape(url)
                published = _total(after, "lockgate_events_published_total") - _total(
                    before, "lockgate_events_published_total"
                )
                delivered = _total(after, "lockgate_events_delivered_total") - _total(
                    before, "lockgate_events_delivered_total"
                )
                return after if published == 15 and delivered >= 30 else None

            after = await eventually(lambda: asyncio.to_thread(moved))
            batches_timed = _total(after, "lockgate_publish_duration_seconds_count") - _total(
                before, "lockgate_publish_duration_seconds_count"
            )
            assert batches_timed == 3
            buckets = after["lockgate_publish_duration_seconds_bucket"]
            assert any(labels.get("le") == "+Inf" for labels, _ in buckets)
            assert max(v for _, v in after["lockgate_queue_depth"]) >= 15
            assert _total(after, "lockgate_subscriptions", kind="ephemeral") >= 1
            lags = after["lockgate_durable_lag"]  # at the head, or a few batches behind it
            assert any(labels["lockgate_queue"] == f"durable:default/{name}" for labels, _ in lags)
            assert _total(after, "lockgate_subscriptions", kind="durable") >= 1
            assert "lockgate_gateway_connections" in after  # the HTTP listener's
            # Per kind, one figure per delivered batch (3 batches each, or fewer when the
            # outbox coalesced them).
            for kind in ("ephemeral", "durable"):
                sent = _total(after, "lockgate_delivery_latency_seconds_count", kind=kind)
                assert (
                    sent - _total(before, "lockgate_delivery_latency_seconds_count", kind=kind) >= 1
                )
            latencies = after["lockgate_delivery_latency_seconds_bucket"]
            assert {labels["le"] for labels, _ in latencies} >= {"0.001", "1.0", "+Inf"}
            # Two open Subscribe streams of org default, on one connection.
            assert _total(after, "lockgate_connections", surface="grpc", org="default") == 1
            assert _total(after, "lockgate_events_published_total", org="default") >= 15
            await sub.close()
            await durable.close()


def test_a_network_metrics_listener_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "lockgate.broker.cli", "serve"),
            *("--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:9464"),
            *("--data-dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "metrics_listen = '0.0.0.0:9464' is not a loopback HOST:PORT" in out.stderr
    assert "Traceback" not in out.stderr


async def test_policy_decisions_and_rate_limit_refusals_are_counted(tmp_path: Path) -> None:
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "m.policy").write_text(
        'policy m on "m.>" {\n  allow publish\n  l: limit publish 2 per hour\n}\n'
    )
    args = ["--metrics-listen", "127.0.0.1:0", "--policy-dir", str(pdir)]
    async with run_broker(extra_args=args) as b, grpc.aio.insecure_channel(b.target) as ch:
        url = await eventually(lambda: _metrics_url(b) if b.output else None)
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        (resp,) = await publish_batches(stub, "m.x", [[event(str(i)) for i in range(5)]])
        refused = len(resp.errors)
        assert refused == 3, resp

        def counted() -> Scrape | None:
            s = _scrape(url)
            return s if _total(s, "lockgate_events_rejected_total") >= refused else None

        after = await eventually(lambda: asyncio.to_thread(counted))
        assert _total(after, "lockgate_events_rejected_total", reason="RATE_LIMITED") == refused
        # One decision for the alike batch, counted per event under the rule that made it.
        assert _total(after, "lockgate_events_published_total") == 2
        assert (
            _total(after, "lockgate_policy_decisions_total", effect="allow", rule="m.policy:2") == 5
        )
        (resp,) = await publish_batches(stub, "other.x", [[event("u")]])
        assert not resp.errors, resp

        def uncovered() -> Scrape | None:
            s = _scrape(url)
            return s if _total(s, "lockgate_policy_decisions_total", rule="none") == 1 else None

        after = await eventually(lambda: asyncio.to_thread(uncovered))
        assert _total(after, "lockgate_policy_decisions_total", effect="default") == 1


def _refusal(url: str, key: str) -> tuple[int, str, dict[str, object]]:
    """Status, content type and body of a refused scrape."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    err = caught.value
    return err.code, err.headers.get_content_type(), json.loads(err.read())


async def test_the_http_gateway_serves_metrics_to_the_admin_only(tmp_path: Path) -> None:
    admin = await keys_create(str(tmp_path), "default", "ops", "admin")
    lead = await keys_create(str(tmp_path), "acme", "lead", "org-admin")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with (
        run_broker(data_dir=str(tmp_path), extra_args=["--http", f"127.0.0.1:{port}"]) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        before = await asyncio.to_thread(_scrape, url, admin)
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        subject = unique("gwmetrics")
        await publish_batches(stub, subject, [[event(str(i)) for i in range(4)]], auth(lead))

        def moved() -> Scrape | None:
            after = _scrape(url, admin)
            published = _total(after, "lockgate_events_published_total") - _total(
                before, "lockgate_events_published_total"
            )
            return after if published == 4 else None

        after = await eventually(lambda: asyncio.to_thread(moved))
        assert _total(after, "lockgate_gateway_connections", surface="http") >= 1
        assert _total(after, "lockgate_gateway_connections", surface="ws") == 0
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{port}/v1/ws", headers={"Authorization": f"Bearer {lead}"}
            ),
        ):

            def one_socket() -> Scrape | None:
                s = _scrape(url, admin)
                return s if _total(s, "lockgate_gateway_connections", surface="ws") == 1 else None

            await eventually(lambda: asyncio.to_thread(one_socket))
        status, kind, doc = await asyncio.to_thread(_refusal, url, lead)
        assert (status, kind, doc["reason"]) == (
            403,
            "application/problem+json",
            "PERMISSION_DENIED",
        )
        status, kind, doc = await asyncio.to_thread(_refusal, url, "lg_not-a-key")
        assert (status, kind, doc["reason"]) == (401, "application/problem+json", "UNAUTHENTICATED")
