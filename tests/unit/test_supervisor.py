"""Supervisor logic without forking, in the way of gunicorn's tests/test_arbiter.py: os.fork,
os.waitid, os.waitpid, os.kill and os.killpg are replaced so the loop's decisions can be
driven step by step (a real fork would make those steps races); Redis is a real server."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from supervisor import arbiter, restarts
from supervisor.arbiter import State, Supervisor
from supervisor.restarts import Death, SlotState
from workers.channel import WorkerState
from workers.config import load_settings


def _status(code: int | None = None, sig: int | None = None) -> int:
    return (sig & 0x7F) if sig is not None else (code & 0xFF) << 8


class FakeOS:
    """Children that exist only in this object; every signal sent is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.next_pid = 40_000
        self.dead: dict[int, int] = {}  # pid -> wait status, not yet reaped
        self.sent: list[tuple[str, int, int]] = []  # (kill|killpg, pid, signal)
        self.reaped: list[int] = []
        monkeypatch.setattr(os, "fork", self.fork)
        monkeypatch.setattr(os, "waitid", self.waitid)
        monkeypatch.setattr(os, "waitpid", self.waitpid)
        monkeypatch.setattr(os, "kill", lambda pid, sig: self.sent.append(("kill", pid, sig)))
        monkeypatch.setattr(os, "killpg", lambda pid, sig: self.sent.append(("killpg", pid, sig)))

    def fork(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def waitid(self, idtype: int, id_: int, options: int) -> object:
        assert options & os.WNOWAIT, "a dead child is seen before it is reaped"
        if not self.dead:
            return None
        return SimpleNamespace(si_pid=next(iter(self.dead)))

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        self.reaped.append(pid)
        return pid, self.dead.pop(pid)

    def die(self, pid: int, status: int) -> None:
        self.dead[pid] = status


@pytest.fixture
def sup(tmp_path, redis_server, monkeypatch):
    fake = FakeOS(monkeypatch)
    (tmp_path / "service_conf.yaml").write_text(
        f"redis:\n  url: {redis_server.url}\nsupervisor:\n  worker_timeout_s: 5\n"
        "  restart_backoff_max_s: 4\n  boot_failures_max: 3\nexecutor:\n  procs: 2\n"
        "  graceful_timeout_s: 10\n")
    settings = load_settings(tmp_path, environ={})
    s = Supervisor(settings, host_id="u1", client=redis_server.client(), reload=lambda:
                   load_settings(tmp_path, environ={}))
    s.fake = fake
    clock = [1000.0]
    # One clock for the supervisor and for the channel stamps the "workers" write.
    monkeypatch.setattr(arbiter.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(restarts, "HEALTHY_UPTIME_S", 10.0)
    # pytest's own process may run helper threads; the supervisor's process runs none.
    threads = [1]
    monkeypatch.setattr(arbiter.threading, "active_count", lambda: threads[0])
    s.threads = threads
    s.clock = clock
    yield s
    for w in s.workers.values():
        w.channel.close()


def _boot(w) -> None:
    """What a worker writes into its channel at the end of boot()."""
    w.channel.report(WorkerState.RUNNING, busy=0, threads=5, started=0, completed=0,
                     rss_bytes=1)


def _pass(s: Supervisor) -> None:
    s.reap_workers()
    s.observe_workers()
    s.manage_workers()
    s.enforce_deadlines()


def test_spawns_one_worker_per_slot(sup) -> None:
    _pass(sup)
    assert sorted(w.slot for w in sup.workers.values()) == [0, 1]
    _pass(sup)
    assert len(sup.workers) == 2, "converged: nothing more spawned"


def test_no_fork_while_another_thread_runs_unless_it_never_ends(sup) -> None:
    sup.threads[0] = 2  # a memory snapshot being written
    _pass(sup)
    assert not sup.workers
    sup.clock[0] += arbiter.FORK_WAIT_MAX_S
    _pass(sup)
    assert len(sup.workers) == 1, "after a bounded wait it forks anyway, one at a time"
    sup.threads[0] = 1
    _pass(sup)
    assert len(sup.workers) == 2


def test_dead_worker_group_killed_before_reaping_then_respawned(sup) -> None:
    _pass(sup)
    w0 = next(w for w in sup.workers.values() if w.slot == 0)
    _boot(w0)
    _pass(sup)
    sup.fake.die(w0.pid, _status(sig=signal.SIGKILL))
    _pass(sup)
    kill = sup.fake.sent.index(("killpg", w0.pid, signal.SIGKILL))
    assert kill >= 0 and sup.fake.reaped == [w0.pid]
    new = next(w for w in sup.workers.values() if w.slot == 0)
    assert new.pid != w0.pid, "a booted worker's crash is respawned at once"
    assert sup.slots[0].predecessors == [] and new.pid == sup.fake.next_pid


def test_failed_boots_back_off_then_halt(sup) -> None:
    sup.procs = 1
    delays = []
    for _ in range(3):
        _pass(sup)
        (w,) = sup.workers.values()
        sup.fake.die(w.pid, _status(code=6))
        sup.reap_workers()
        delays.append(sup.slots[0].next_spawn_at - sup.clock[0])
        sup.clock[0] = sup.slots[0].next_spawn_at
    assert delays[:2] == [0.5, 1.0]
    assert sup.state is State.DRAINING and sup.exit_code == 6


def test_unresponsive_worker_gets_abrt_then_kill(sup) -> None:
    _pass(sup)
    w, other = sup.workers.values()
    _boot(w)  # stamped at the (fake) time 1000
    sup.clock[0] += 5.5
    _boot(other)  # still answering
    sup.observe_workers()
    assert ("kill", w.pid, signal.SIGABRT) in sup.fake.sent
    assert not [x for x in sup.fake.sent if x[1] == other.pid]
    assert ("killpg", w.pid, signal.SIGKILL) not in sup.fake.sent
    sup.clock[0] += arbiter.ABORT_GRACE_S
    sup.observe_workers()
    assert ("killpg", w.pid, signal.SIGKILL) in sup.fake.sent


def test_graceful_stop_terms_everyone_and_kills_at_the_deadline(sup) -> None:
    _pass(sup)
    pids = sorted(sup.workers)
    sup.begin_stop(graceful=True)
    assert sorted(p for kind, p, sig in sup.fake.sent if sig == signal.SIGTERM) == pids
    sup.clock[0] += 10 + arbiter.STOP_MARGIN_S
    sup.enforce_deadlines()
    assert sorted(p for kind, p, sig in sup.fake.sent if kind == "killpg") == pids
    sup.handle_term()
    assert sup.state is State.QUICK, "a second TERM is a quick stop"
    assert sorted(p for kind, p, sig in sup.fake.sent if sig == signal.SIGQUIT) == pids


def test_ttin_ttou_and_a_reload_that_keeps_them(sup) -> None:
    _pass(sup)
    sup.handle_ttin()
    _pass(sup)
    assert sorted(w.slot for w in sup.workers.values()) == [0, 1, 2]
    sup.handle_hup()
    assert sup.procs == 3, "workers added by TTIN stay across a reload"
    assert sup.replacing == [0, 1, 2]
    _pass(sup)
    stopping = [w for w in sup.workers.values() if w.stopping]
    assert [w.slot for w in stopping] == [0], "one slot at a time"
    new0 = next(w for w in sup.workers.values() if w.slot == 0 and not w.stopping)
    _pass(sup)
    assert [w.slot for w in sup.workers.values() if w.stopping] == [0], "waits for the boot"
    _boot(new0)
    _pass(sup)
    assert sorted(w.slot for w in sup.workers.values() if w.stopping) == [0, 1]
    sup.handle_ttou()
    _pass(sup)
    assert any(w.slot == 2 and w.stopping for w in sup.workers.values())


def test_draining_worker_gets_a_successor_and_its_leftovers_by_mail(sup) -> None:
    _pass(sup)
    old = next(w for w in sup.workers.values() if w.slot == 1)
    _boot(old)
    old.channel.report(WorkerState.DRAINING, busy=1, threads=5, started=20, completed=19,
                       rss_bytes=1)
    _pass(sup)
    new = next(w for w in sup.workers.values() if w.slot == 1 and not w.stopping)
    assert old.stopping and new.pid != old.pid
    sup.fake.die(old.pid, _status(code=0))
    _pass(sup)
    assert new.channel.take_mail() == [[old.consumer, f"worker {old.consumer} exited with "
                                                      "status 0"]]


@pytest.mark.parametrize("booted,status,uptime,want", [
    (True, _status(code=0), 1, (Death.CLEAN, 0.0)),
    (True, _status(sig=9), 1, (Death.CRASH, 0.0)),
    (False, _status(code=5), 1, (Death.NO_REDIS, 0.5)),
    (False, _status(code=6), 1, (Death.BOOT_FAILURE, 0.5)),
])
def test_judge_first_deaths(booted, status, uptime, want) -> None:
    v = restarts.judge(SlotState(), booted=booted, status=status, uptime_s=uptime,
                       backoff_max_s=4, boot_failures_max=5)
    assert (v.death, v.delay_s) == want and not v.halt


def test_judge_sequences() -> None:
    slot = SlotState()
    boot = [restarts.judge(slot, booted=False, status=_status(code=6), uptime_s=0.1,
                           backoff_max_s=4, boot_failures_max=5) for _ in range(5)]
    assert [v.delay_s for v in boot] == [0.5, 1, 2, 4, 4] and [v.halt for v in boot][-2:] == [
        False, True]
    crash = [restarts.judge(slot, booted=True, status=_status(sig=9), uptime_s=1,
                            backoff_max_s=30, boot_failures_max=5) for _ in range(5)]
    assert [v.delay_s for v in crash] == [0, 0.5, 1, 2, 2], "a booted worker: at most 2 s"
    assert slot.boot_failures == 0
    healthy = restarts.judge(slot, booted=True, status=_status(sig=9), uptime_s=60,
                             backoff_max_s=30, boot_failures_max=5)
    assert healthy.delay_s == 0, "a long healthy run starts the count again"
