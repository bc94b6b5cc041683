"""S16: Redis connections never cross a fork, even while the supervisor forks all the time."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from tests.support import Conf, Harness, poll, statuses
from tests.support_proc import beating, tcp_redis, wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(120)

TASKS = 2000  # the scenario's 4000, halved for the suite's time budget


def _names_by_port(r) -> dict[int, str]:
    out = {}
    for c in r.client_list():
        host, _, port = c["addr"].rpartition(":")
        if host == "127.0.0.1":
            out[int(port)] = c["name"]
    return out


def _strangers(sup_pid: int, r) -> list[str]:
    """TCP connections of taskexec processes not named after the process that holds them."""
    procs = [psutil.Process(sup_pid)] + psutil.Process(sup_pid).children()
    held = []
    for p in procs:
        try:
            title = " ".join(p.cmdline())
            held += [(p.pid, title, c.laddr.port) for c in p.net_connections("tcp") if c.raddr]
        except psutil.Error:
            continue
    names = _names_by_port(r)
    if any(names.get(port) == "" for _, _, port in held):
        # A connection opened a moment ago has not had its CLIENT SETNAME yet (it is sent in
        # the handshake): look again before judging it.
        time.sleep(0.5)  # ok: a second look at a connection still in its handshake
        names = {port: name or names.get(port, "") for port, name in _names_by_port(r).items()}
    bad = []
    for pid, title, port in held:
        name = names.get(port)
        if name is None:
            continue  # closed between the two looks
        if title.startswith("taskexec: supervisor"):
            ok = name == f"taskexec_supervisor_h16_{pid}"
        else:
            ok = name.startswith("task_executor_h16_") and name.split("_")[4] == str(pid)
        if not ok:
            bad.append(f"{title} (pid {pid}) holds a connection named {name!r}")
    return bad


def test_s16_connections_are_named_by_their_process_through_churn(tmp_path) -> None:
    server, url = tcp_redis(tmp_path / "redis")
    try:
        conf = with_proc_handlers(Conf(tmp_path / "conf", url))
        h = Harness(tmp_path, conf, server)
        sup = h.start("run", "--procs", "4", "--threads", "8", "--host-id", "h16")
        r = server.client()
        beating(r, 4, 20)
        ids = h.client().submit_many("count", [{}] * TASKS)
        deadline = time.monotonic() + 60
        sig, bad = signal.SIGTTIN, []
        while statuses(r, ids).count("done") < TASKS and time.monotonic() < deadline:
            sup.send(sig)
            sig = signal.SIGTTOU if sig == signal.SIGTTIN else signal.SIGTTIN
            bad += _strangers(sup.pid, r)
            time.sleep(0.2)  # poll interval: the scenario's signal period
        if sig == signal.SIGTTOU:
            sup.send(sig)
        assert statuses(r, ids).count("done") == TASKS
        pipe = r.pipeline()
        for i in ids:
            pipe.llen(f"test:runs:{i}")
        assert set(pipe.execute()) == {2}, "each task started and finished exactly once"
        assert not bad, bad[:5]
        assert psutil.Process(sup.pid).num_threads() == 1, "the supervisor never has threads"
        poll(lambda: not _strangers(sup.pid, r), 5, 0.2, "every connection named")
        sup.send(signal.SIGTERM)
        assert wait_exit(sup, 20)[0] == 0
        log = sup.stderr
        for bad_word in ("Protocol", "protocol error", "InvalidResponse", "KeyError",
                         "ConnectionError", "Traceback"):
            assert bad_word not in log, bad_word
    finally:
        h.close()
        server.stop()
