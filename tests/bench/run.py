"""The benchmark's command line: run the scenarios, repeat them, print the figures.

    python -m tests.bench [--quick] [--only noop,ref,io,cpu,latency,crash,memory]
                          [--repeat N] [--json FILE] [--tcp] [--profile] [--calm S] [--keep]

Exit status: 0 every target measured passed, 1 some target failed, 2 usage, 3 the bench could
not measure (a deadline passed, a process died), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from tests.bench import crash, latency, profiling, reference, report, throughput
from tests.bench.counters import CpuWatch
from tests.bench.env import ROOT, Bench, BenchError
from tests.bench.handlers import calibrate

SCENARIOS = ("noop", "ref", "io", "cpu", "latency", "crash", "memory")
FULL = {"noop": 20000, "io": 2000, "cpu": 400, "latency": 500, "crash": 200, "crash_s": 0.5,
        "memory": 20000, "profile": 60000}
QUICK = {"noop": 3000, "io": 400, "cpu": 60, "latency": 100, "crash": 64, "crash_s": 0.3,
         "memory": 3000, "profile": 10000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench",
                                description="taskexec benchmark (issue 7)")
    p.add_argument("--quick", action="store_true", help="small sizes and 1 repeat (smoke run)")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
    p.add_argument("--repeat", type=int, default=None, help="repeats (default 3; quick: 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--tcp", action="store_true",
                   help="Redis on a free TCP port of 127.0.0.1 instead of a unix socket")
    p.add_argument("--profile", action="store_true",
                   help="also sample the workers with py-spy during a noop drain")
    p.add_argument("--calm", type=float, default=None, metavar="S",
                   help="before each scenario wait up to S seconds for other processes to "
                        "leave the CPUs (default 20; quick: 0)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose among {', '.join(SCENARIOS)}")
    if args.repeat is not None and not 1 <= args.repeat <= 50:
        p.error("--repeat must be between 1 and 50")
    return args


def run_scenario(name: str, bench: Bench, sizes: dict[str, Any]) -> dict[str, Any]:
    if name == "noop":
        return throughput.noop(bench, sizes["noop"])
    if name == "ref":
        return {**reference.measure(bench, sizes["noop"]),
                **reference.measure_cpu(bench, sizes["cpu"], sizes["cpu_iterations"],
                                        sizes["cpu_ms"] / 1e3),
                **reference.measure_latency(bench, sizes["latency"])}
    if name == "io":
        return throughput.io(bench, sizes["io"])
    if name == "cpu":
        return throughput.cpu(bench, sizes["cpu"], sizes["cpu_iterations"], sizes["cpu_ms"] / 1e3)
    if name == "latency":
        return latency.latency(bench, sizes["latency"])
    if name == "crash":
        return crash.crash(bench, sizes["crash"], sizes["crash_s"])
    return latency.memory(bench, sizes["memory"])


def meta(bench: Bench, args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--", "workers", "supervisor"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and changed:
            commit += " with uncommitted changes"  # figures of a work tree, not of the commit
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                         "")
    except OSError:
        pass
    return {"command": "python -m tests.bench " + shlex.join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "commit": commit,
            "python": platform.python_version(), "cpus": os.cpu_count(), "cpu_model": model,
            "redis": bench.r.info("server")["redis_version"],
            "transport": bench.server.transport, "repeats": repeat,
            "sizes": "quick" if args.quick else "full"}


def header(m: dict[str, Any]) -> str:
    return (f"taskexec benchmark ({m['sizes']} sizes, {m['repeats']} repeat(s); median, min, max)"
            f"\n{m['date']}, commit {m['commit'] or '?'}; redis-server {m['redis']} on "
            f"{m['transport']}; Python {m['python']}; {m['cpus']} CPU(s) {m['cpu_model']}")


def measure_all(bench: Bench, args: argparse.Namespace, sizes: dict[str, Any], repeat: int
                ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    results: dict[str, list[float]] = {}
    details: dict[str, Any] = {"calls": [], "foreign_cores": {}, "stolen_cores": {}}
    watch = CpuWatch(bench.server.pid)
    for i in range(repeat):
        for name in args.only:
            if args.calm:
                watch.wait_quiet(args.calm)
            started = time.monotonic()
            watch.start()
            sample = run_scenario(name, bench, sizes)
            foreign = watch.foreign_cores()
            details["foreign_cores"].setdefault(name, []).append(foreign)
            details["stolen_cores"].setdefault(name, []).append(watch.stolen_cores())
            for key, value in sample.items():
                if key == "_calls":
                    details["calls"].append(value)
                else:
                    results.setdefault(key, []).append(value)
            print(f"[{i + 1}/{repeat}] {name}: {time.monotonic() - started:.1f} s; other "
                  f"processes used {foreign:.2f} core(s) meanwhile", file=sys.stderr, flush=True)
    if args.profile:
        details["profile"] = profiling.profile(bench, sizes["profile"])
    return results, details


def median_calls(runs: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    names = {n for run in runs for n in run}
    return {n: (statistics.median(r.get(n, (0.0, 0.0))[0] for r in runs),
                statistics.median(r[n][1] for r in runs if n in r)) for n in names}


def _finite(value: Any) -> Any:
    """JSON has no infinity: a figure that could not be measured is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _interrupt(signum: int, frame: object) -> None:
    # The bench is a foreground tool, not the service: INT, TERM and HUP unwind the stack, so
    # the context managers stop every process the bench started. INT is set explicitly: a shell
    # starts background jobs with it ignored.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.calm is None:
        args.calm = 0.0 if args.quick else 20.0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        with Bench(tcp=args.tcp, keep=args.keep) as bench:
            if args.keep:
                print(f"bench folder: {bench.tmp}", file=sys.stderr)
            sizes["cpu_iterations"], task_s = calibrate()
            sizes["cpu_ms"] = task_s * 1000
            m = meta(bench, args, repeat)
            results, details = measure_all(bench, args, sizes, repeat)
    except KeyboardInterrupt:
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench could not measure: {exc}", file=sys.stderr)
        return 3
    print(report.table(results, sizes, header(m)))
    print("\n" + report.foreign_table(details["foreign_cores"], details["stolen_cores"]))
    if details["calls"]:
        details["calls"] = median_calls(details["calls"])
        print("\n" + report.calls_table(details["calls"]))
    if "profile" in details:
        print("\n" + profiling.text(details["profile"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(_finite(report.as_json(results, sizes, m, details)), fh, indent=1)
    return 0 if all(v["pass"] for v in report.judge(results)) else 1
