"""S35: cleanup runs once per interval across all hosts and survives its own failure."""

import re
import time

import orjson
import pytest

from tests.support import poll

pytestmark = pytest.mark.timeout(120)

HOSTS = 8
RUN_S = 14  # the scenario's 30 s, scaled down


def test_s35_one_pass_per_interval_and_a_broken_key_is_skipped(harness, redis_server):
    harness.conf.update(cleanup={"interval_s": 2})
    r = redis_server.client()
    old = r.time()[0] - 600
    dead = [f"task_executor_gone{i}_0_{1000 + i}" for i in range(20)]
    for name in dead[:19]:
        r.zadd(name, {orjson.dumps({"name": name}): old})
    r.hset(dead[19], "not", "a zset")
    r.sadd("TASKEXE", *dead)
    hosts = [harness.start("run", "--host-id", f"h{i}", "--procs", "1") for i in range(HOSTS)]
    def live():
        return [n for n in r.smembers("TASKEXE") if b"gone" not in n and r.exists(n)]

    poll(lambda: len(live()) == HOSTS, 40, 0.2, "eight hosts heartbeat")
    started = time.monotonic()
    poll(lambda: not any(r.sismember("TASKEXE", n) for n in dead), 5 + 3 * 2, 0.1,
         "dead executors removed (after the first pass that may judge)")
    assert not any(r.exists(n) for n in dead[:19])
    assert r.type(dead[19]) == b"hash", "the broken key is left alone"
    remaining = RUN_S - (time.monotonic() - started)
    if remaining > 0:
        time.sleep(remaining)  # ok: counting passes over the scenario's period
    err = "".join(h.stderr for h in hosts)
    stamps = sorted(m.group(1) for m in re.finditer(r"^(\S+ \S+) INFO .*Cleanup pass", err, re.M))
    total_s = time.monotonic() - started + 10  # passes since the first worker started
    assert stamps and len(stamps) <= total_s / 2 + 2, (len(stamps), total_s)
    errors = [line for line in err.splitlines() if "ERROR" in line and dead[19] in line]
    assert len(errors) == 1 and "expected a zset" in errors[0], errors
    last = stamps[-1]
    assert last[11:19] >= time.strftime("%H:%M:%S", time.localtime(time.time() - 5)), \
        "passes keep coming after the failing one"
