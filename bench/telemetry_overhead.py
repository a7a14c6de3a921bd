"""Telemetry overhead on the batched publish benchmark (issue 12's goal: at most 5% with
tracing on and sampling at 1%).

    .venv/bin/python bench/telemetry_overhead.py [--runs 7] [--duration 4]

The ``batched`` scenario of bench/run.py (client publish_batch_async, 500-event batches ->
client subscriber) against three brokers, interleaved run by run on fresh brokers: telemetry
off; OTLP (gRPC) to a local sink with ``trace_sample_ratio = 0.01``; OTLP with every batch
traced. The sink is the tests' OTLP receiver (opentelemetry-proto services). Reported per
mode: median and min-max of the delivered rate and of the broker's CPU per event (process
CPU time: the figure least moved by other load on a shared machine), and each median's ratio
to telemetry off measured in the same run.

On a loaded machine the end-to-end spread hides a cost of a few percent, so a second part
measures the instrumentation alone: per mode, in a fresh process (the providers are global),
the calls one published and delivered 500-event batch makes (publish span, decisions,
published and delivered counters, both histograms), 20,000 times, in process CPU time with
the exporter's thread and a final flush included; its excess over ``off`` is then set against
the broker's CPU per batch with telemetry off from the first part (or ``--base-us`` per
event). ``--micro-only`` runs this part alone. Not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Result
from bench.scenarios import SCENARIOS, run_side
from tests.broker.test_e2e_otlp import Receiver, _grpc_receiver

MODES = ("off", "otlp 1%", "otlp 100%")


def _broker_args(mode: str, endpoint: str) -> list[str]:
    if mode == "off":
        return []
    ratio = "0.01" if mode == "otlp 1%" else "1"
    return [f"--otlp-endpoint={endpoint}", f"--trace-sample-ratio={ratio}"]


def _spread(values: list[float], fmt: str) -> str:
    if not values:
        return "no runs"
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def micro(mode: str, endpoint: str, batches: int) -> float:
    """Process CPU microseconds of one batch's telemetry calls under ``mode``."""
    from lockgate.broker.telemetry import Telemetry
    from lockgate.broker.telemetry_export import TelemetrySettings, setup_telemetry
    from lockgate.broker.v1 import cloudevent_pb2

    settings = TelemetrySettings()
    if mode != "off":
        ratio = 0.01 if mode == "otlp 1%" else 1.0
        settings = TelemetrySettings(otlp_endpoint=endpoint, trace_sample_ratio=ratio)
    export = setup_telemetry(settings)
    t = Telemetry()
    first = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    effects = {("allow", "orders.policy:2"): 500}
    kind = {"kind": "ephemeral"}
    t0 = time.process_time()
    for _ in range(batches):
        span = t.start_publish("orders.eu", 500, first)
        t.count_decisions(effects)
        t.count_published("acme", 500)
        t.publish_duration.record(0.001)
        t.end_publish(span, None)
        t.delivered.add(500)
        t.delivery_latency.record(0.002, kind)
        t.totals.add("acme", 1, 500)
    export.close()  # flushes the spans still queued: their export is part of the cost
    return (time.process_time() - t0) / batches * 1e6


def run_micro(endpoint: str, base_us_per_event: float, rounds: int) -> None:
    per_mode: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--micro-mode", mode, "--endpoint", endpoint],
                capture_output=True,
                text=True,
                check=True,
            )
            per_mode[mode].append(float(out.stdout.split()[-1]))
    off = statistics.median(per_mode["off"])
    base = base_us_per_event * 500
    print(
        f"instrumentation per 500-event batch ({rounds} rounds of 20,000 batches; broker CPU "
        f"per batch with telemetry off: {base:,.0f} us):"
    )
    for mode in MODES:
        med = statistics.median(per_mode[mode])
        extra = med - off
        print(
            f"  {mode:<10} {_spread(per_mode[mode], '.2f')} us/batch | above off "
            f"{extra:+.2f} us = {extra / base:+.3%} of the broker's CPU per batch",
            flush=True,
        )


async def main(args: argparse.Namespace) -> int:
    if args.micro_mode:
        print(f"{micro(args.micro_mode, args.endpoint, 20_000):.3f}")
        return 0
    receiver = Receiver()
    endpoint, stop = await _grpc_receiver(receiver)
    try:
        base = args.base_us
        if not args.micro_only:
            base = await run_e2e(args, endpoint, receiver)
        await asyncio.to_thread(run_micro, endpoint, base, args.rounds)
    finally:
        result = stop()
        if asyncio.iscoroutine(result):
            await result
    return 0


async def run_e2e(args: argparse.Namespace, endpoint: str, receiver: Receiver) -> float:
    """The interleaved end-to-end runs; returns the median broker CPU per event, off."""
    batched = next(s for s in SCENARIOS if s.name == "batched")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"bench/telemetry_overhead.py: {args.runs} runs x {args.duration:g} s per mode, "
        f"interleaved; {os.cpu_count()} CPUs, load average {load}",
        flush=True,
    )
    results: dict[str, list[Result]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="lockgate-overhead-") as tmp:
        for i in range(1, args.runs + 1):
            for mode in MODES:
                r = await run_side(
                    batched.lockgate, args.duration, Path(tmp), _broker_args(mode, endpoint)
                )
                results[mode].append(r)
                print(
                    f"  run {i} {mode:<10} {float(r.get('rate') or 0):>10,.0f}/s  "
                    f"server {float(r.get('cpu_us_server') or 0):6.2f} us/event  "
                    f"lost {r.get('lost')}  {r.get('errors') or ''}",
                    flush=True,
                )
    print(f"spans received by the sink: {len(receiver.spans)}")
    base_rate = statistics.median(float(r.get("rate") or 0) for r in results["off"])
    base_cpu = statistics.median(float(r.get("cpu_us_server") or 0) for r in results["off"])
    for mode in MODES:
        ok = [r for r in results[mode] if not r.get("errors") and r.get("rate")]
        rates = [float(r["rate"]) for r in ok]
        cpus = [float(r["cpu_us_server"]) for r in ok]
        ratio = (
            f"rate {statistics.median(rates) / base_rate:.3f}x, "
            f"cpu/event {statistics.median(cpus) / base_cpu:.3f}x of off"
            if rates and base_rate and base_cpu
            else "-"
        )
        print(
            f"{mode:<10} rate {_spread(rates, ',.0f')}/s | broker CPU "
            f"{_spread(cpus, '.2f')} us/event | {ratio}",
            flush=True,
        )
    return base_cpu


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="bench/telemetry_overhead.py", description=__doc__)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--micro-only", action="store_true", help="the instrumentation part alone")
    p.add_argument("--rounds", type=int, default=5, help="instrumentation rounds per mode")
    p.add_argument(
        "--base-us", type=float, default=10.0, help="broker CPU per event, off (--micro-only)"
    )
    p.add_argument("--micro-mode", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    sys.exit(asyncio.run(main(p.parse_args())))
