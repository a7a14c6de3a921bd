"""The scenarios, their baselines, and one measured run of a side (server + workers)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Args, Result, now_ns
from bench.procs import PySpy, Worker, cpu_of, grpc_floor, lockgate_server, nats_server
from bench.stages import breakdown

Server = Callable[[Path], contextlib.AbstractAsyncContextManager[tuple[dict[str, Any], int]]]


@dataclass
class Side:
    """One system under test: a server, one subscriber, some publishers."""

    label: str
    server: str  # "lockgate" | "nats" | "floor" (bench/grpc_floor.py)
    sub: tuple[str, Args]
    pubs: list[tuple[str, Args]]
    policies: str = ""  # a policy file the broker loads for this side (--policy-dir)
    stages: bool = False  # record the broker's stage times (LOCKGATE_STAGE_LOG), latency runs


@dataclass
class Scenario:
    name: str
    title: str
    kind: str  # "throughput" | "latency"
    lockgate: Side
    baseline: Side
    target: str
    min_rate: float = 0.0  # throughput: events/s
    min_ratio: float = 0.0  # throughput: lockgate / baseline
    max_p50_us: float = 0.0  # latency
    max_p99_us: float = 0.0
    max_p50_ratio: float = 0.0  # latency: p50 at most this times the baseline's
    notes: list[str] = field(default_factory=list)


def _tasks(role: str) -> tuple[str, Args]:
    return role, {"tasks": 64}


# Ten rules on the benchmark's subjects, every one evaluated for every event (none fires a
# deny, the limit is generous), as a realistic set would be.
TEN_RULES = """\
policy bench on "bench.>" {
  allow publish when principal.org == "default"
  allow subscribe
  deny publish when event.type == "payment.failed" and event.data.amount > 10000
      unless "finance" in principal.roles because "large failed payments need finance"
  deny publish when event.source starts_with "untrusted:" because "untrusted source"
  deny publish when subject[1] == "blocked" because "blocked subject"
  require size(event.type) > 0 because "events need a type"
  require event.specversion == "1.0" because "CloudEvents 1.0"
  limit publish 100000000 per second by principal.agent
  tag "benched" = "yes" when subject[0] == "bench"
  deny publish when event.type matches "^forbidden[.]" because "forbidden type"
}
"""


_CLIENT_PUB = ("client-batch-pub", {"batch": 500, "window": 8})
_RAW_PUB = ("lg-batch-pub", {"batch": 500, "window": 8})
_BIG = {"max_in_flight": 100_000}

# Headline scenarios use the public client (lockgate.clients) on both sides, as the baselines use
# nats-py; the `ceiling` ones drive the broker with hand-encoded frames on raw grpcio stubs.
SCENARIOS: list[Scenario] = [
    Scenario(
        "batched",
        "client publish_batch_async (500 events, 8 frames in flight) -> client subscriber "
        "(async for msg in sub)",
        "throughput",
        Side("lockgate", "lockgate", ("client-sub", {}), [_CLIENT_PUB]),
        Side("nats core", "nats", ("nats-sub", {}), [("nats-pub", {})]),
        ">= 200,000/s and >= 1.0x nats core",
        min_rate=200_000,
        min_ratio=1.0,
    ),
    Scenario(
        "batches",
        "as batched, the subscriber iterating sub.batches()",
        "throughput",
        Side("lockgate", "lockgate", ("client-sub", {"batches": True}), [_CLIENT_PUB]),
        Side("nats core", "nats", ("nats-sub", {}), [("nats-pub", {})]),
        ">= 200,000/s and >= 1.0x nats core",
        min_rate=200_000,
        min_ratio=1.0,
    ),
    Scenario(
        "ceiling",
        "broker ceiling: raw-stub batched publish -> raw-stub subscriber (buffer 100,000)",
        "throughput",
        Side("lockgate", "lockgate", ("lg-sub", _BIG), [_RAW_PUB]),
        Side("nats core", "nats", ("nats-sub", {}), [("nats-pub", {})]),
        "none (the broker's own ceiling, not what a user sees)",
    ),
    Scenario(
        "plain",
        "plain await c.publish() from 64 tasks -> client subscriber",
        "throughput",
        Side("lockgate", "lockgate", ("client-sub", {}), [_tasks("client-task-pub")]),
        Side("nats core", "nats", ("nats-sub", {}), [_tasks("nats-task-pub")]),
        ">= 100,000/s",
        min_rate=100_000,
    ),
    Scenario(
        "durable",
        "durable: client publish_batch_async -> client durable subscriber, batch.ack() per batch",
        "throughput",
        Side(
            "lockgate",
            "lockgate",
            ("client-sub", {"durable": "bench-d", "max_in_flight": 5000, "batches": True}),
            [_CLIENT_PUB],
        ),
        Side(
            "jetstream",
            "nats",
            ("js-sub", {"batch": 500, "max_ack_pending": 20_000}),
            [("js-pub", {"max_pending": 4000})],
        ),
        ">= 100,000/s and >= 3x JetStream",
        min_rate=100_000,
        min_ratio=3.0,
    ),
    Scenario(
        "policy",
        "broker ceiling with a 10-rule policy set on, against off (raw stubs)",
        "throughput",
        Side("policy on", "lockgate", ("lg-sub", _BIG), [_RAW_PUB], policies=TEN_RULES),
        Side("policy off", "lockgate", ("lg-sub", _BIG), [_RAW_PUB]),
        ">= 0.9x of the same broker without policies",
        min_ratio=0.9,
    ),
    Scenario(
        "latency",
        "latency at 2,000 events/s, one c.publish() per event -> client subscriber",
        "latency",
        Side(
            "lockgate",
            "lockgate",
            ("client-sub", {"latency": True}),
            [("client-latency-pub", {"rate": 2000})],
            stages=True,
        ),
        Side(
            "nats core",
            "nats",
            ("nats-sub", {"latency": True}),
            [("nats-latency-pub", {"rate": 2000})],
        ),
        "p50 <= 300 us, p99 <= 1 ms",
        max_p50_us=300,
        max_p99_us=1000,
    ),
    Scenario(
        "latency-ceiling",
        "broker ceiling: latency at 2,000 events/s, raw-stub one-event frames -> raw subscriber",
        "latency",
        Side(
            "lockgate",
            "lockgate",
            ("lg-sub", {"latency": True}),
            [("lg-latency-pub", {"rate": 2000})],
        ),
        Side(
            "nats core",
            "nats",
            ("nats-sub", {"latency": True}),
            [("nats-latency-pub", {"rate": 2000})],
        ),
        "none (the broker's own ceiling)",
        max_p50_us=300,
        max_p99_us=1000,
    ),
    Scenario(
        "floor-latency",
        "the latency-ceiling broker side against the grpcio floor (bench/grpc_floor.py: a "
        "minimal grpcio relay, same wire, same raw workers, nothing else)",
        "latency",
        Side(
            "lockgate",
            "lockgate",
            ("lg-sub", {"latency": True}),
            [("lg-latency-pub", {"rate": 2000})],
        ),
        Side(
            "grpc floor",
            "floor",
            ("lg-sub", {"latency": True}),
            [("lg-latency-pub", {"rate": 2000})],
        ),
        "none (what grpcio alone costs)",
    ),
    Scenario(
        "floor-batched",
        "the ceiling broker side against the grpcio floor relaying the same 500-event frames",
        "throughput",
        Side("lockgate", "lockgate", ("lg-sub", _BIG), [_RAW_PUB]),
        Side("grpc floor", "floor", ("lg-sub", _BIG), [_RAW_PUB]),
        "none (what grpcio alone costs)",
    ),
    Scenario(
        "request",
        "request/reply round trip at 1,000/s: c.request() -> client responder msg.respond()",
        "latency",
        Side(
            "lockgate", "lockgate", ("client-responder", {}), [("client-requester", {"rate": 1000})]
        ),
        Side("nats core", "nats", ("nats-responder", {}), [("nats-requester", {"rate": 1000})]),
        "p50 <= 2x nats-py's, p99 <= 2 ms",
        max_p50_us=0,  # judged against the baseline: see report.rows_for
        max_p99_us=2000,
        max_p50_ratio=2.0,
    ),
    Scenario(
        "floor-request",
        "request/reply at 1,000/s with raw stubs on both sides against the grpcio floor "
        "(bench/grpc_floor.py relays the same four stream messages and the reply's ack)",
        "latency",
        Side("lockgate", "lockgate", ("lg-responder", {}), [("lg-requester", {"rate": 1000})]),
        Side("grpc floor", "floor", ("lg-responder", {}), [("lg-requester", {"rate": 1000})]),
        "none (what grpcio alone costs)",
    ),
]


def _server(side: Side, broker_args: list[str]) -> Server:
    if side.server == "lockgate":

        def start(tmp: Path) -> contextlib.AbstractAsyncContextManager[tuple[dict[str, Any], int]]:
            args = list(broker_args)
            if side.policies:
                pdir = tmp / "policies"
                pdir.mkdir(exist_ok=True)
                (pdir / "bench.policy").write_text(side.policies)
                args += ["--policy-dir", str(pdir)]
            return lockgate_server(tmp, args)

        return start
    return grpc_floor if side.server == "floor" else nats_server


@contextlib.asynccontextmanager
async def _workers(
    side: Side, conn: dict[str, Any], duration: float, tmp: Path
) -> AsyncIterator[tuple[Worker, list[Worker]]]:
    started: list[Worker] = []
    try:
        role, args = side.sub
        sub = await Worker.start(role, {**args, **conn}, tmp)
        started.append(sub)
        await sub.expect("READY")
        pubs = []
        for role, args in side.pubs:
            pub = await Worker.start(role, {**args, **conn, "duration": duration}, tmp)
            started.append(pub)
            pubs.append(pub)
        for pub in pubs:
            await pub.expect("READY")
        yield sub, pubs
    finally:
        for w in started:
            await w.close()


async def run_side(
    side: Side,
    duration: float,
    tmp: Path,
    broker_args: list[str],
    profile: Path | None = None,
    *,
    native: bool = False,
) -> Result:
    """Starts a fresh server, the subscriber, then the publishers; returns the metrics."""
    stage_log = tmp / f"stages-{os.urandom(4).hex()}.jsonl" if side.stages else None
    if stage_log is not None:
        os.environ["LOCKGATE_STAGE_LOG"] = str(stage_log)  # inherited by the broker only
    try:
        server = _server(side, broker_args)(tmp)
        async with server as (conn, server_pid):
            os.environ.pop("LOCKGATE_STAGE_LOG", None)
            spy = (
                await PySpy.attach(server_pid, profile, native=native)
                if profile is not None
                else None
            )
            try:
                async with _workers(side, conn, duration, tmp) as (sub, pubs):
                    result = await _measure(sub, pubs, server_pid)
            finally:
                if spy is not None:
                    await spy.stop()
    finally:
        os.environ.pop("LOCKGATE_STAGE_LOG", None)
    samples = result.pop("samples_by_id", None)
    if stage_log is not None and samples and stage_log.exists():  # written as the broker exits
        result["stages"] = breakdown(stage_log, samples)
        stage_log.unlink()
    return result


async def _measure(sub: Worker, pubs: list[Worker], server_pid: int) -> Result:
    cpu0, t0 = cpu_of(server_pid), now_ns()
    for pub in pubs:
        pub.send("GO")
    pub_results = [await pub.expect("RESULT") for pub in pubs]
    published = sum(int(r.get("published", 0)) for r in pub_results)
    sub.send(f"STOP {published}")
    result = await sub.expect("RESULT")
    wall = (now_ns() - t0) / 1e9
    errors = [r["error"] for r in (*pub_results, result) if r.get("error")]
    pub = pub_results[0]
    result.update(
        published=published,
        pub_rate=sum(r.get("pub_rate", 0.0) for r in pub_results),
        lost=published - int(result.get("received", 0)),
        cpu_server=(cpu_of(server_pid) - cpu0) / wall,
        cpu_pub=pub.get("cpu", 0.0),
        cpu_sub=result.get("cpu", 0.0),
        errors=errors,
        wall=wall,
    )
    if "frames" in pub:
        result["events_per_frame"] = published / max(pub["frames"], 1)
    if "samples" in pub:  # request/reply: the requester timed the round trips
        for key in ("p50_us", "p90_us", "p99_us", "max_us", "samples"):
            result[key] = pub[key]
    rate = float(result.get("rate") or 0.0)
    if rate > 0:
        # CPU per delivered event, per process: the figure least moved by other load.
        for who in ("server", "pub", "sub"):
            result[f"cpu_us_{who}"] = result[f"cpu_{who}"] / rate * 1e6
    return result
