"""S8: a task that kills its worker is dead-lettered after queue.max_attempts."""

import pytest

from tests.delivery_support import field, pending, start_count, start_host
from tests.support import poll, statuses

pytestmark = pytest.mark.timeout(150)


@pytest.mark.parametrize("kind,death", [
    ("poison_kill", "killed by signal 9"),
    ("poison_exit", "exited with status 1"),
    ("poison_segv", "killed by signal 11"),
])
def test_s8_poison_task_dead_lettered_after_max_attempts(harness, redis_server, kind, death):
    from tests.delivery_support import with_handlers

    with_handlers(harness, supervisor={"restart_backoff_max_s": 1})
    r = redis_server.client()
    sup = start_host(harness, "h1", 1, 1)
    client = harness.client()
    poison = client.submit(kind)
    noops = client.submit_many("noop", [{}] * 20)
    poll(lambda: statuses(r, [poison]) == ["dead"], 40, 0.1, "poison task dead")
    assert start_count(r, poison) == 3
    assert death in field(r, poison, "error")
    dead = r.xrange("te.dead.common")
    assert len(dead) == 1
    entry = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert entry["task_id"] == poison and death in entry["reason"] and entry["deliveries"] == "4"
    poll(lambda: statuses(r, noops) == ["done"] * 20, 60, 0.1, "20 noop done")
    assert pending(r) == 0
    err = sup.stderr
    assert err.count(f"{death}") >= 3
    deaths = [line for line in err.splitlines() if "while running task(s)" in line]
    assert len(deaths) == 3 and all(poison in line and "Worker 0 (pid" in line
                                    for line in deaths), deaths
