"""End-to-end benchmarks of Lockgate against nats-server (core and JetStream).

    .venv/bin/python bench/run.py [--runs 3] [--duration 5] [--scenario NAME] [--json FILE]
                                  [--profile] [--broker-arg=--fsync=os ...]
                                  [--publish-timeout SECONDS]

From a checkout only: the benchmarks are not in the installed package, nor a ``lockgate`` command.

Broker (or nats-server), subscriber and publishers run as separate processes; every scenario
runs ``--runs`` times against Lockgate and against its baseline, alternating, on a fresh server
each time. See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Result
from bench.profiling import format_top, top_self
from bench.report import describe, rows_for, table
from bench.scenarios import SCENARIOS, Scenario, run_side
from bench.stages import describe as stages_line
from bench.stages import median_of as stages_median

PROFILES = Path(__file__).resolve().parent / "profiles"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="runs per scenario and side (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=[s.name for s in SCENARIOS],
        help="run only this scenario (repeatable); default: all",
    )
    p.add_argument("--json", type=Path, help="write every run's metrics to this file")
    p.add_argument(
        "--profile",
        action="store_true",
        help="after each scenario, one extra Lockgate run with the broker under py-spy; writes "
        "bench/profiles/broker-SCENARIO.speedscope.json and a top-15 summary",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="--profile with C frames too (py-spy --native): grpcio's and uvloop's own code",
    )
    p.add_argument(
        "--publish-timeout",
        type=float,
        metavar="SECONDS",
        help="plain: the Lockgate publishers call c.publish(..., timeout=SECONDS)",
    )
    p.add_argument(
        "--broker-arg",
        action="append",
        default=[],
        help="extra `lockgate serve` argument, e.g. --broker-arg=--fsync=os (repeatable)",
    )
    argv = sys.argv[1:] if argv is None else argv
    return p.parse_args(argv)


async def run_scenario(
    sc: Scenario, args: argparse.Namespace, tmp: Path
) -> tuple[list[Result], list[Result]]:
    print(f"\n== {sc.name}: {sc.title}  (target {sc.target})", flush=True)
    lg: list[Result] = []
    base: list[Result] = []
    for i in range(1, args.runs + 1):
        for side, out in ((sc.lockgate, lg), (sc.baseline, base)):
            r = await _safe_run(side, args, tmp)
            out.append(r)
            print(f"  run {i} {side.label:<10} {describe(r, sc.kind)}", flush=True)
            if r.get("stages"):
                print(f"        {stages_line(r['stages'])}", flush=True)
    for line in _summary(sc, lg, base):
        print("  " + line, flush=True)
    if any(r.get("stages") for r in lg):
        print("  " + stages_median(lg), flush=True)
    return lg, base


async def _safe_run(side: object, args: argparse.Namespace, tmp: Path) -> Result:
    try:
        return await run_side(side, args.duration, tmp, args.broker_arg)  # type: ignore[arg-type]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _summary(sc: Scenario, lg: list[Result], base: list[Result]) -> list[str]:
    rows = rows_for(sc, lg, base)
    return [
        f"{r[0]}: lockgate {r[1]} | {r[2]} | ratio {r[3]} | cpu us/event {r[4]} | {r[5]}"
        for r in rows
    ]


async def profile(sc: Scenario, args: argparse.Namespace, tmp: Path) -> None:
    """One extra Lockgate run of ``sc`` with the broker under py-spy."""
    PROFILES.mkdir(exist_ok=True)
    out = PROFILES / f"broker-{sc.name}.speedscope.json"
    print(f"\n== profile: one {sc.name} run with the broker under py-spy -> {out}", flush=True)
    r = await run_side(
        sc.lockgate, args.duration, tmp, args.broker_arg, profile=out, native=args.native
    )
    print(f"  profiled run: {describe(r, sc.kind)}")
    summary = format_top(top_self(out))
    (PROFILES / f"broker-{sc.name}-top.txt").write_text(summary + "\n")
    print("  broker: top 15 functions by self time (py-spy, idle excluded)")
    print("\n".join("    " + line for line in summary.splitlines()), flush=True)


def _with_publish_timeout(sc: Scenario, seconds: float) -> Scenario:
    """``plain`` with ``timeout=seconds`` on every Lockgate publish; other scenarios as they are."""
    if sc.name != "plain":
        return sc
    pubs = [(role, {**extra, "timeout": seconds}) for role, extra in sc.lockgate.pubs]
    side = dataclasses.replace(sc.lockgate, pubs=pubs)
    return dataclasses.replace(sc, title=f"{sc.title}, timeout={seconds:g}", lockgate=side)


def _machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"


async def main(args: argparse.Namespace) -> int:
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    if args.publish_timeout is not None:
        chosen = [_with_publish_timeout(s, args.publish_timeout) for s in chosen]
    print(
        f"bench/run.py: {args.runs} runs x {args.duration:g} s per side, 128-byte data, "
        f"separate processes; python {sys.version.split()[0]}; {_machine()}",
        flush=True,
    )
    rows: list[list[str]] = []
    dump: dict[str, dict[str, list[Result]]] = {}
    with tempfile.TemporaryDirectory(prefix="lockgate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for sc in chosen:
            lg, base = await run_scenario(sc, args, tmp)
            rows += rows_for(sc, lg, base)
            dump[sc.name] = {"lockgate": lg, sc.baseline.label: base}
            if args.profile or args.native:
                await profile(sc, args, tmp)
    print(f"\n{_machine()}\n" + table(rows))
    if args.json:
        args.json.write_text(json.dumps({"when": time.time(), "scenarios": dump}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main(parse_args())))
