"""The figures: median, min and max of the repeats, the issue's targets, a table and JSON."""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Measure:
    key: str
    label: str  # formatted with the sizes of the run
    unit: str
    fmt: str = "{:,.0f}"


MEASURES = [
    Measure("noop.submit_many_per_s", "noop  enqueue, Client.submit_many ({noop:,})", "tasks/s"),
    Measure("noop.cli_submit_per_s", "noop  enqueue, taskexec submit --jsonl ({noop:,})",
            "tasks/s"),
    Measure("noop.cli_startup_s", "noop  taskexec submit of 1 task (start-up)", "s", "{:.2f}"),
    Measure("noop.drain_per_s", "noop  drain {noop:,}, first heartbeat -> last done",
            "tasks/s"),
    Measure("noop.drain_task_per_s", "noop  drain, first task begun -> last done", "tasks/s"),
    Measure("noop.drain_wall_per_s", "noop  drain, supervisor start -> last done", "tasks/s"),
    Measure("noop.boot_s", "noop  supervisor start -> first heartbeat", "s", "{:.2f}"),
    Measure("noop.rt_per_task", "noop  Redis round trips per task (socket reads)", "",
            "{:.3f}"),
    Measure("noop.cmds_per_task", "noop  Redis commands per task (scripts' too)", "", "{:.2f}"),
    Measure("noop.redis_cpu_ms_per_1k", "noop  redis-server CPU per 1,000 tasks", "ms",
            "{:.1f}"),
    Measure("noop.worker_cpu_ms_per_1k", "noop  workers' CPU per 1,000 tasks", "ms", "{:.1f}"),
    Measure("ref.drain_per_s", "ref   bare LPUSH/BRPOP, 2 processes ({noop:,})", "tasks/s"),
    Measure("ref.cpu_fraction", "ref   cpu work in 2 bare processes, of two cores' time", "",
            "{:.3f}"),
    Measure("ref.cpu_best_fraction", "ref   the same, the work timed at its best of 5", "",
            "{:.3f}"),
    Measure("ref.cpu_task_ms", "ref   CPU time per task in the bare processes", "ms",
            "{:.2f}"),
    Measure("ref.latency_p50_ms", "ref   p50 bare BRPOP/LPUSH answer seen ({latency:,})", "ms",
            "{:.2f}"),
    Measure("ref.latency_p99_ms", "ref   p99 bare BRPOP/LPUSH answer seen", "ms", "{:.2f}"),
    Measure("io.rate_per_s", "io    {io:,} x sleep 10 ms, 2 x 8 threads", "tasks/s"),
    Measure("io.fraction", "io    fraction of ideal (1,600/s)", "", "{:.3f}"),
    Measure("io.run_ms", "io    begin_at -> finished_at of a task (mean)", "ms", "{:.2f}"),
    Measure("io.cycle_ms", "io    one slot's time per task (16 / rate)", "ms", "{:.2f}"),
    Measure("io.sleep_ms", "io    a 10 ms sleep alone, 8 threads (mean)", "ms", "{:.2f}"),
    Measure("cpu.rate_per_s", "cpu   {cpu:,} x {cpu_ms:.1f} ms Python, 2 x 1 thread",
            "tasks/s", "{:,.1f}"),
    Measure("cpu.task_ms", "cpu   one task's work alone, before and after (best of 5)", "ms",
            "{:.2f}"),
    Measure("cpu.fraction", "cpu   handlers' CPU time, of two cores' time", "", "{:.3f}"),
    Measure("cpu.best_fraction", "cpu   the work timed at its best of 5, of two cores", "",
            "{:.3f}"),
    Measure("cpu.vs_bare", "cpu   fraction of 2 bare processes' speed, just before", "",
            "{:.3f}"),
    Measure("cpu.handler_ms", "cpu   wall time inside the handler (mean)", "ms", "{:.2f}"),
    Measure("cpu.handler_cpu_ms", "cpu   CPU time of the handler's thread (mean)", "ms",
            "{:.2f}"),
    Measure("cpu.run_ms", "cpu   begin_at -> finished_at of a task (mean)", "ms", "{:.2f}"),
    Measure("cpu.gap_ms", "cpu   one slot's finish -> next begin (mean)", "ms", "{:.2f}"),
    Measure("cpu.redis_cpu_ms", "cpu   redis-server CPU per task", "ms", "{:.3f}"),
    Measure("cpu.other_cpu_ms", "cpu   workers' CPU per task beyond the work", "ms",
            "{:.3f}"),
    Measure("latency.p50_ms", "lat   p50 submit -> done seen by a 50 us poll ({latency:,})",
            "ms", "{:.2f}"),
    Measure("latency.p99_ms", "lat   p99 submit -> done seen by a 50 us poll", "ms", "{:.2f}"),
    Measure("latency.max_ms", "lat   max submit -> done seen by a 50 us poll", "ms", "{:.2f}"),
    Measure("latency.wait_p50_ms", "lat   p50 submit -> Client.wait returns ({latency:,})", "ms",
            "{:.2f}"),
    Measure("latency.wait_p99_ms", "lat   p99 submit -> Client.wait returns", "ms", "{:.2f}"),
    Measure("latency.rec_p50_ms", "lat   p50 record created_at -> finished_at", "ms", "{:.2f}"),
    Measure("latency.rec_p99_ms", "lat   p99 record created_at -> finished_at", "ms", "{:.2f}"),
    Measure("latency.wake_p50_ms", "lat   p50 created_at -> begin_at (wake-up and begin)", "ms",
            "{:.2f}"),
    Measure("latency.wake_p99_ms", "lat   p99 created_at -> begin_at", "ms", "{:.2f}"),
    Measure("latency.run_p50_ms", "lat   p50 begin_at -> finished_at (reply, handler)", "ms",
            "{:.2f}"),
    Measure("latency.run_p99_ms", "lat   p99 begin_at -> finished_at", "ms", "{:.2f}"),
    Measure("latency.ack_p50_ms", "lat   p50 finished_at -> seen (FINISH, poll)", "ms",
            "{:.2f}"),
    Measure("latency.ack_p99_ms", "lat   p99 finished_at -> seen", "ms", "{:.2f}"),
    Measure("crash.lost", "crash tasks lost ({crash:,} x {crash_s:g} s, 2 x 4 threads)", "",
            "{:.0f}"),
    Measure("crash.rerun_after_done", "crash tasks started again after done", "", "{:.0f}"),
    Measure("crash.started_twice", "crash tasks started twice (killed mid-run)", "", "{:.0f}"),
    Measure("crash.held", "crash tasks the killed worker held", "", "{:.0f}"),
    Measure("crash.respawn_s", "crash kill -> replacement's first heartbeat", "s", "{:.3f}"),
    Measure("crash.recover_s", "crash kill -> last task of the killed worker done", "s",
            "{:.2f}"),
    Measure("memory.supervisor_mb", "mem   supervisor RSS", "MB", "{:.1f}"),
    Measure("memory.idle_worker0_mb", "mem   idle worker 0 RSS", "MB", "{:.1f}"),
    Measure("memory.idle_worker1_mb", "mem   idle worker 1 RSS", "MB", "{:.1f}"),
    Measure("memory.worker_after_mb", "mem   worker RSS after {memory:,} tasks (1 proc)", "MB",
            "{:.1f}"),
    Measure("memory.growth_mb", "mem   growth idle -> {memory:,} tasks", "MB", "{:.2f}"),
    Measure("memory.growth_2nd_mb", "mem   growth over the next {memory:,} tasks", "MB",
            "{:.2f}"),
]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass(frozen=True)
class Target:
    text: str
    value: Callable[[dict[str, list[float]]], float]
    op: str  # ">=", "<", "<="
    limit: float
    judged_on: str  # what `value` takes of the repeats
    fmt: str = "{:,.2f}"

    def judge(self, results: dict[str, list[float]]) -> tuple[float, bool]:
        value = self.value(results)
        ops = {">=": operator.ge, "<": operator.lt, "<=": operator.le}
        return value, not math.isnan(value) and ops[self.op](value, self.limit)


def _median(key: str) -> Callable[[dict[str, list[float]]], float]:
    return lambda res: statistics.median(res[key])


def _worst(key: str) -> Callable[[dict[str, list[float]]], float]:
    return lambda res: max(res[key])


def _ratio(res: dict[str, list[float]]) -> float:
    return statistics.median(res["noop.drain_per_s"]) / statistics.median(res["ref.drain_per_s"])


TARGETS = [
    Target("noop drain >= 8,000 tasks/s", _median("noop.drain_per_s"), ">=", 8000, "median",
           "{:,.0f}"),
    Target("noop drain >= 0.8 x bare reference loop", _ratio, ">=", 0.8, "median/median"),
    Target("io >= 0.9 of ideal", _median("io.fraction"), ">=", 0.9, "median"),
    Target("cpu >= 0.9 of two cores (the work's CPU time)", _median("cpu.fraction"), ">=", 0.9,
           "median"),
    Target("cpu >= 0.9 of 2 bare processes (same run)", _median("cpu.vs_bare"), ">=", 0.9,
           "median"),
    Target("latency p50 < 2 ms (producer's Client.wait)", _median("latency.wait_p50_ms"), "<",
           2, "median"),
    Target("latency p99 < 10 ms (producer's Client.wait)", _median("latency.wait_p99_ms"), "<",
           10, "median"),
    Target("crash: 0 tasks lost", _worst("crash.lost"), "<=", 0, "worst", "{:.0f}"),
    Target("crash: 0 completed tasks run twice", _worst("crash.rerun_after_done"), "<=", 0,
           "worst", "{:.0f}"),
    Target("crash: killed worker's last task done <= 3 s", _worst("crash.recover_s"), "<=", 3,
           "worst"),
    Target("idle worker RSS < 40 MB", _worst("memory.idle_worker_mb"), "<", 40, "worst",
           "{:.1f}"),
    Target("worker RSS growth over the tasks <= 5 MB", _worst("memory.growth_mb"), "<=", 5,
           "worst"),
]


def judge(results: dict[str, list[float]]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        try:
            value, ok = t.judge(results)
        except KeyError:  # its scenario was not run
            continue
        out.append({"target": t.text, "measured": value, "judged_on": t.judged_on,
                    "pass": ok, "shown": t.fmt.format(value)})
    return out


def table(results: dict[str, list[float]], sizes: dict[str, Any], header: str) -> str:
    """The figures and the targets as plain text."""
    lines = [header, "",
             f"{'measure':<56}{'median':>10}{'min':>10}{'max':>10}  unit"]
    for m in MEASURES:
        if m.key not in results:
            continue
        s = summary(results[m.key])
        cells = "".join(f"{m.fmt.format(s[k]):>10}" for k in ("median", "min", "max"))
        lines.append(f"{m.label.format(**sizes):<56}{cells}  {m.unit}")
    verdicts = judge(results)
    if verdicts:
        lines += ["", f"{'target (issue 7)':<56}{'measured':>10}  {'judged on':<14}result"]
        for v in verdicts:
            lines.append(f"{v['target']:<56}{v['shown']:>10}  {v['judged_on']:<14}"
                         f"{'PASS' if v['pass'] else 'FAIL'}")
    return "\n".join(lines)


def foreign_table(foreign: dict[str, list[float]], stolen: dict[str, list[float]]) -> str:
    """How busy the machine was with other work while each scenario ran."""
    worst = max((max(v) for v in foreign.values()), default=0.0)
    cells = ", ".join(f"{name} {max(v):.2f}" for name, v in foreign.items())
    taken = ", ".join(f"{name} {max(v):.2f}" for name, v in stolen.items())
    note = ("" if worst < 0.1 else
            "  <- other work shared the CPUs: figures are lower than on an idle machine")
    return (f"CPU cores busy with other processes (worst repeat): {cells}{note}\n"
            f"  of which taken by the virtual machine's host (steal): {taken}")


def calls_table(calls: dict[str, tuple[float, float]], limit: int = 14) -> str:
    """Redis commands per noop task (scripts' inner commands included), most frequent first."""
    lines = [f"{'Redis command (noop drain)':<30}{'calls/task':>12}{'usec/call':>12}"]
    for name, (per_task, usec) in sorted(calls.items(), key=lambda kv: -kv[1][0])[:limit]:
        lines.append(f"{name:<30}{per_task:>12.3f}{usec:>12.2f}")
    return "\n".join(lines)


def as_json(results: dict[str, list[float]], sizes: dict[str, Any], meta: dict[str, Any],
            details: dict[str, Any]) -> dict[str, Any]:
    measures = {}
    for m in MEASURES:
        if m.key in results:
            measures[m.key] = {"label": m.label.format(**sizes), "unit": m.unit,
                               "values": results[m.key], **summary(results[m.key])}
    return {"meta": meta, "sizes": sizes, "measures": measures, "targets": judge(results),
            "details": details}
