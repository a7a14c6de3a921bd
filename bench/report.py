"""Summaries of the runs: per-run lines, median (min-max), and the final table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.common import Result
from bench.scenarios import Scenario


@dataclass
class Stat:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(statistics.median(values), min(values), max(values))


def rate(v: float) -> str:
    return f"{v:,.0f}/s"


def micros(v: float) -> str:
    return f"{v:,.0f} us"


def fmt_stat(s: Stat, unit: str) -> str:
    suffix = "/s" if unit == "rate" else " us"
    if s.median != s.median:  # nan: no successful run
        return "n/a"
    return f"{s.median:,.0f}{suffix} ({s.low:,.0f}-{s.high:,.0f})"


def describe(r: Result, kind: str) -> str:
    """One side of one run, in one line."""
    if "rate" not in r:
        return f"ERROR {r.get('error')}"
    if kind == "latency":
        head = (
            f"p50 {micros(r.get('p50_us', float('nan')))} p90 {micros(r.get('p90_us', 0))} "
            f"p99 {micros(r.get('p99_us', float('nan')))} max {micros(r.get('max_us', 0))} "
            f"n={r.get('samples', 0)}"
        )
    else:
        head = f"{rate(r['rate'])} (published {rate(r['pub_rate'])}, lost {r['lost']:,}"
        if "events_per_frame" in r:
            head += f", {r['events_per_frame']:.0f} events/frame"
        head += ")"
    cpu = f"cpu server {r['cpu_server']:.0%} pub {r['cpu_pub']:.0%} sub {min(r['cpu_sub'], 9):.0%}"
    if "cpu_us_server" in r:
        cpu += f" = {cpu_per_event(r)} us/event"
    errors = f" ERRORS: {'; '.join(r['errors'])}" if r.get("errors") else ""
    return f"{head}; {cpu}{errors}"


def cpu_per_event(r: Result) -> str:
    """CPU microseconds per delivered event: server/publisher/subscriber."""
    return "/".join(f"{r[f'cpu_us_{who}']:.1f}" for who in ("server", "pub", "sub"))


def cpu_median(results: list[Result]) -> str:
    """Median CPU per event of each process over the runs, ``server/pub/sub`` microseconds."""
    parts = []
    for who in ("server", "pub", "sub"):
        v = values(results, f"cpu_us_{who}")
        parts.append(f"{statistics.median(v):.1f}" if v else "-")
    return "/".join(parts)


def _verdict(sc: Scenario, ok: bool) -> str:
    if sc.target.startswith("none"):
        return sc.target
    return f"{sc.target} {'PASS' if ok else 'FAIL'}"


def values(results: list[Result], key: str) -> list[float]:
    return [float(r[key]) for r in results if key in r]


def ratio(a: Stat, b: Stat) -> str:
    if not b.median or b.median != b.median or a.median != a.median:
        return "-"
    return f"{a.median / b.median:.2f}x"


def rows_for(sc: Scenario, lg: list[Result], base: list[Result]) -> list[list[str]]:
    """Table rows: one per throughput scenario, p50 and p99 rows for latency."""
    label = sc.baseline.label
    if sc.kind == "throughput":
        a, b = Stat.of(values(lg, "rate")), Stat.of(values(base, "rate"))
        ok = a.median >= sc.min_rate and (not sc.min_ratio or a.median >= sc.min_ratio * b.median)
        return [
            [
                sc.name,
                fmt_stat(a, "rate"),
                f"{label} {fmt_stat(b, 'rate')}",
                ratio(a, b),
                cpu_median(lg) + " | " + cpu_median(base),
                _verdict(sc, ok),
            ]
        ]
    rows = []
    for key, limit in (("p50_us", sc.max_p50_us), ("p99_us", sc.max_p99_us)):
        a, b = Stat.of(values(lg, key)), Stat.of(values(base, key))
        if key == "p50_us" and sc.max_p50_ratio:
            ok, goal = a.median <= sc.max_p50_ratio * b.median, f"<= {sc.max_p50_ratio:g}x base"
        else:
            ok, goal = a.median <= limit, f"<= {limit:,.0f} us"
        verdict = (
            sc.target if sc.target.startswith("none") else f"{goal} {'PASS' if ok else 'FAIL'}"
        )
        rows.append(
            [
                f"{sc.name} {key[:3]}",
                fmt_stat(a, "us"),
                f"{label} {fmt_stat(b, 'us')}",
                ratio(a, b),
                cpu_median(lg) + " | " + cpu_median(base),
                verdict,
            ]
        )
    return rows


def table(rows: list[list[str]]) -> str:
    head = [
        "scenario",
        "lockgate median (min-max)",
        "baseline median (min-max)",
        "ratio",
        "cpu us/event srv/pub/sub lg | base",
        "target",
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "+".join("-" * (w + 2) for w in widths)

    def fmt(r: list[str]) -> str:
        return "|".join(f" {c:<{w}} " for c, w in zip(r, widths, strict=True))

    return "\n".join([fmt(head), line, *(fmt(r) for r in rows)])
