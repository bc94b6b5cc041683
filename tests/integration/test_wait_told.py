"""Client.wait is told of a final status by the server (PUBLISH on the record's key) instead of
polling for it; every way a record becomes final publishes, and waits beyond the connections
kept for them, or across a lost connection, still end by polling."""

from __future__ import annotations

import threading

import pytest

from tests.delivery_support import with_handlers
from tests.support import heartbeats, poll, statuses
from workers import client as client_module

pytestmark = pytest.mark.timeout(90)


def _hgetall_calls(r) -> int:
    # Only the producer's status reads use HGETALL: the workers never do.
    return int(r.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


def test_wait_is_woken_by_the_final_status_not_by_reading_again(harness, redis_server,
                                                                monkeypatch):
    # No reading again within the test: the wait can only end by the server's message.
    monkeypatch.setattr(client_module, "RECHECK_S", 60.0)
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    task = client.submit("sleep", {"seconds": 1.5})
    before = _hgetall_calls(r)
    outcome: dict = {}
    waiter = threading.Thread(target=lambda: outcome.update(client.wait(task, 20)))
    waiter.start()
    poll(lambda: r.pubsub_numsub(f"te:task:{task}")[0][1] == 1, 10, 0.01,
         "the wait subscribed to the record's channel")
    waiter.join(20)
    assert outcome.get("status") == "done"
    # One read on subscribing, one after the message. Polling from 2 ms up to 200 ms would
    # have read it about 10 times.
    assert _hgetall_calls(r) - before == 2


def test_every_way_to_a_final_status_publishes_it(harness, redis_server):
    with_handlers(harness, queue={"max_attempts": 2})
    r = redis_server.client()
    client = harness.client()
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("te:task:*")
    # Queued and cancelled, with no worker yet: CANCEL.
    cancelled = client.submit("noop", queue="nobody")
    assert client.cancel(cancelled) == "cancelled"
    # A cancel flag already set when a worker begins the task: the begin step.
    flagged = client.submit("noop")
    r.set(f"{flagged}-cancel", "x")
    harness.start("run", "--procs", "1", "--threads", "2")
    done = client.submit("noop")
    failed = client.submit("fail")
    dead = client.submit("no_such_type")  # dead-lettered: an unknown task type
    exhausted = client.submit("retry_once", {"delay_s": 0.1, "always": True})
    expected = {cancelled: "cancelled", flagged: "cancelled", done: "done", failed: "failed",
                dead: "dead", exhausted: "failed"}
    poll(lambda: statuses(r, list(expected)) == list(expected.values()), 20, 0.05,
         "every task final")
    published: dict[str, str] = {}

    def collect() -> bool:
        # get_message returns None for the subscription's confirmation, too: poll it.
        msg = pubsub.get_message(timeout=0.05)
        if msg is not None:
            published[msg["channel"].decode().removeprefix("te:task:")] = msg["data"].decode()
        return len(published) >= len(expected)

    poll(collect, 10, 0, "a message for every final status")
    pubsub.close()
    assert published == expected


def test_waits_beyond_the_kept_connections_poll_and_all_end(harness, redis_server, monkeypatch):
    monkeypatch.setattr(client_module, "WAIT_CONNECTIONS", 2)  # so few threads exceed them
    harness.start("run", "--procs", "1", "--threads", "6")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    ids = client.submit_many("sleep", [{"seconds": 0.5}] * 6)
    results: dict[str, str] = {}

    def wait(task_id: str) -> None:
        results[task_id] = client.wait(task_id, 20)["status"]

    threads = [threading.Thread(target=wait, args=(t,)) for t in ids]
    for t in threads:
        t.start()
    poll(lambda: sum(c.get("cmd") == "subscribe" for c in r.client_list()) == 2, 10, 0.01,
         "two waits subscribed, the rest polling")
    for t in threads:
        t.join(30)
    assert results == {t: "done" for t in ids}
    # The kept connections were given back unsubscribed: the next wait subscribes again.
    assert not any(c.get("cmd") == "subscribe" for c in r.client_list())
    assert client.wait(client.submit("noop"), 20)["status"] == "done"


def test_a_wait_whose_connection_is_killed_goes_on_by_polling(harness, redis_server):
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    task = client.submit("sleep", {"seconds": 1.5})
    outcome: dict[str, str] = {}
    waiter = threading.Thread(target=lambda: outcome.update(client.wait(task, 20)))
    waiter.start()
    poll(lambda: [c for c in r.client_list() if c.get("cmd") == "subscribe"], 10, 0.01,
         "the wait subscribed")
    r.client_kill_filter(_type="pubsub")
    waiter.join(20)
    assert outcome.get("status") == "done"


def test_wait_commands_refuse_bad_arguments_and_say_what_happened(harness, redis_server):
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    for args in (["wait", "bad id!"], ["status", "bad id!"], ["cancel", "bad id!"],
                 ["wait", "x", "--timeout", "-1"], ["submit", "noop", "--timeout", "3"]):
        res = harness.cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert b"Traceback" not in res.stderr
    unknown = harness.cli("wait", "never-submitted")
    assert unknown.returncode == 3
    assert "task never-submitted not found (no record te:task:never-submitted)" in \
        unknown.stderr.decode()
    # submit --wait says why a task failed, as wait does.
    failed = harness.cli("submit", "fail", "--wait", "--timeout", "20")
    assert failed.returncode == 1
    line = failed.stdout.decode().splitlines()[0]
    assert " failed: TaskFailed: " in line, line


def test_a_timed_wait_that_ends_while_redis_is_away_exits_5_naming_it(harness, redis_server):
    task = harness.client().submit("noop", queue="nobody")
    waiter = harness.start("wait", task, "--timeout", "3")
    name = f"taskexec_client_{waiter.pid}"
    poll(lambda: any(c.get("name") == name for c in redis_server.client().client_list()), 10,
         0.01, "the waiter is connected and waiting")
    redis_server.stop()
    assert waiter.wait(15) == 5
    err = waiter.stderr
    assert "at the timeout (3 s) of the wait for task " + task in err, err
    assert str(redis_server.socket) in err and "Traceback" not in err
