"""S50: messages naming an unknown handler."""

import signal

import pytest

from tests.delivery_handlers import HANDLERS
from tests.delivery_support import field, start_count
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s50_unknown_and_dotted_types_are_dead_lettered_never_imported(harness, redis_server,
                                                                       tmp_path):
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    marker = tmp_path / "marker"
    v2 = [client.submit("echo_v2") for _ in range(3)]
    dotted = [client.submit("os:system", {"command": f"touch {marker}"}),
              client.submit("workers.handlers.chunk:run",
                            {"path": "/etc/hostname", "out": str(marker)})]
    noops = client.submit_many("noop", [{}] * 10)
    poll(lambda: statuses(r, noops) == ["done"] * 10, 20, 0.1, "noop done")
    poll(lambda: statuses(r, v2 + dotted) == ["dead"] * 5, 10, 0.1, "unknown types dead")
    for t, name in zip(v2 + dotted, ["echo_v2"] * 3 + ["os:system", "workers.handlers.chunk:run"],
                       strict=True):
        assert f"unknown task type '{name}'" in field(r, t, "error")
        # A dead record says when and why in its log, as a finished one does.
        assert float(field(r, t, "finished_at")) >= float(field(r, t, "created_at"))
        assert f"Task dead: unknown task type '{name}'" in field(r, t, "progress_msg")
    assert not marker.exists()
    err = sup.stderr
    assert err.count("unknown task type") == 5 and "Traceback" not in err
    assert "handlers: chunk, count, fail, hang, noop, sleep" in err
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0
    harness.conf.update(handlers=HANDLERS)
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    res = harness.cli("dead", "retry", v2[0])
    assert res.returncode == 0, res.stderr
    poll(lambda: statuses(r, [v2[0]]) == ["done"], 20, 0.1, "retried task done")
    assert start_count(r, v2[0]) == 1
    assert statuses(r, v2[1:]) == ["dead", "dead"]
