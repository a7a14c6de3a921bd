"""The latency breakdown: the broker's stage times (``broker.stages``) joined by event id with
the publisher's send time (in the data) and the subscriber's receive time."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.common import Result, percentile

STAGES = ("receive", "validate", "decide", "identify", "store", "route", "send", "deliver")
"""receive: publisher's send -> the broker read the frame (client, network, grpc);
validate, decide (policies), identify (dedup, ids, framing): the pipeline; store: queued ->
the group commit answered; route: -> queued for the subscribers; send: -> the subscriber's
stream took the body from its queue (the event loop's turn); deliver: -> the subscriber had it
(grpc, network, the client's receive path)."""


def breakdown(stage_log: Path, samples: list[list[int]], skip: int = 200) -> Result:
    """Per stage p50/p99/max in microseconds over the samples ``[id, sent_ns, received_ns]``."""
    batches: dict[int, list[int]] = {}
    sent: dict[int, int] = {}
    pauses: list[tuple[int, int, float]] = []
    for line in stage_log.read_text().splitlines():
        row = json.loads(line)
        if "batch" in row:
            first, *marks = row["batch"]
            batches[first] = marks
        elif "sent" in row:
            first, at = row["sent"]
            sent.setdefault(first, at)
        else:
            gen, start, end = row["gc"]
            pauses.append((gen, start, (end - start) / 1e3))
    spans: dict[str, list[float]] = {s: [] for s in STAGES}
    for event_id, stamp, got in samples[skip:]:
        marks, out = batches.get(event_id), sent.get(event_id)
        if marks is None or out is None or len(marks) != 6:
            continue
        points = [stamp, *marks, out, got]
        for name, a, b in zip(STAGES, points, points[1:], strict=False):
            spans[name].append((b - a) / 1e3)
    result: Result = {}
    # Pauses from the first published batch on (not startup's, nor broker/heap.py's own).
    begin = min((m[0] for m in batches.values()), default=0)
    in_run = [(g, p) for g, start, p in pauses if start >= begin]
    if in_run:
        result["gc"] = {
            "n": len(in_run),
            "max": max(p for _, p in in_run),
            "full": sum(1 for g, _ in in_run if g == 2),
            "total": sum(p for _, p in in_run),
        }
    for name, values in spans.items():
        if values:
            values.sort()
            result[name] = {
                "p50": percentile(values, 0.5),
                "p99": percentile(values, 0.99),
                "max": values[-1],
                "n": len(values),
            }
    return result


def describe(stages: Result) -> str:
    """One line: each stage's p50/p99 (max) in microseconds."""
    line = "stages us p50/p99 (max): " + ", ".join(
        f"{name} {s['p50']:,.0f}/{s['p99']:,.0f} ({s['max']:,.0f})"
        for name, s in stages.items()
        if name != "gc"
    )
    gc = stages.get("gc")
    if gc:
        line += (
            f"; broker gc: {gc['n']} pauses ({gc['full']} full), longest {gc['max']:,.0f} us,"
            f" {gc['total'] / 1e3:,.1f} ms in all"
        )
    return line


def median_of(runs: list[Result]) -> str:
    """The median over runs of each stage's p50 and p99."""
    parts = []
    for name in STAGES:
        p50 = [r["stages"][name]["p50"] for r in runs if name in r.get("stages", {})]
        p99 = [r["stages"][name]["p99"] for r in runs if name in r.get("stages", {})]
        if p50:
            parts.append(f"{name} {statistics.median(p50):,.0f}/{statistics.median(p99):,.0f}")
    return "stages us p50/p99 (median of runs): " + ", ".join(parts) if parts else ""
