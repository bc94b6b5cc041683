"""The shared page between a worker and its supervisor, title fitting, unit file parsing."""

from __future__ import annotations

import os

import pytest

from supervisor import unitfile
from workers import titles
from workers.channel import Channel, WorkerState


def test_channel_is_shared_across_fork() -> None:
    ch = Channel()
    pid = os.fork()
    if pid == 0:  # the child writes, as a worker does, and leaves at once
        ch.report(WorkerState.DRAINING, busy=3, threads=4, started=9, completed=6,
                  rss_bytes=123 << 20)
        ch.set_reason("recycled")
        ch.set_tail("RuntimeError: boom")
        os._exit(0)
    os.waitpid(pid, 0)
    rep = ch.read()
    assert (rep.state, rep.busy, rep.threads, rep.started, rep.completed, rep.rss_bytes) == (
        WorkerState.DRAINING, 3, 4, 9, 6, 123 << 20)
    assert rep.reason == "recycled" and ch.tail() == "RuntimeError: boom" and rep.alive_at > 0
    ch.close()


def test_mailbox_delivers_each_post_once() -> None:
    ch = Channel()
    assert ch.take_mail() is None
    ch.post([["c1", "died"]])
    assert ch.take_mail() == [["c1", "died"]]
    assert ch.take_mail() is None
    ch.post([["c1", "died"], ["c2", "died too"]])
    assert ch.take_mail() == [["c1", "died"], ["c2", "died too"]]
    ch.close()


def test_long_text_is_cut_not_overflowing() -> None:
    ch = Channel()
    ch.set_tail("é" * 5000)
    assert 0 < len(ch.tail().encode()) <= 700
    ch.close()


@pytest.mark.parametrize("capacity,want", [
    (None, "taskexec: worker 1 [2/4] common,bulk"),
    (100, "taskexec: worker 1 [2/4] common,bulk"),
    (33, "taskexec: worker 1 [2/4] common"),
    (28, "taskexec: worker 1 [2/4]"),
    (5, "taske"),
])
def test_titles_are_cut_at_a_word(capacity, want) -> None:
    full = titles.worker_title(1, 2, 4, ("common", "bulk"))
    assert titles.fit(full, capacity) == want


@pytest.mark.parametrize("text,seconds", [
    ("45", 45), ("45s", 45), ("1min 30s", 90), ("500ms", 0.5), ("2h", 7200),
    ("infinity", float("inf")),
])
def test_timespans(text, seconds) -> None:
    assert unitfile.timespan(text) == seconds


def test_bad_timespan() -> None:
    with pytest.raises(ValueError):
        unitfile.timespan("soon")


def test_unit_parsing(tmp_path) -> None:
    path = tmp_path / "x.service"
    path.write_text("[Service]\n# comment\nExecStart=/bin/taskexec run \\\n  --conf-dir /etc/t\n"
                    "RestartPreventExitStatus=2\nRestartPreventExitStatus=6 SIGABRT\n"
                    "Environment=A=1 \"B=two words\"\n")
    unit = unitfile.parse(path)
    assert unit.exec_start() == ["/bin/taskexec", "run", "--conf-dir", "/etc/t"]
    assert unit.all("Service", "RestartPreventExitStatus") == ["2", "6", "SIGABRT"]
    from supervisor.doctor import conf_dir_of, unit_environment

    assert conf_dir_of(unit) == "/etc/t"
    assert unit_environment(unit) == {"A": "1", "B": "two words"}
