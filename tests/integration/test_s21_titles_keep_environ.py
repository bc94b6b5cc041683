"""S21: process titles say role, slot, load and queues, and do not wipe the environment."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support import Conf, Harness, poll
from tests.support_proc import beating, wait_exit, workers_by_slot

pytestmark = pytest.mark.timeout(60)

MARK = {"TASKEXEC_TEST_MARK": "1"}
WORKER = re.compile(r"^taskexec: worker (\d+) \[(\d+)/(\d+)\] ([\w,.:-]+)$")


def _args(pid: int) -> str:
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True,
                          text=True, check=True).stdout.strip()


def _check(sup_pid: int, threads: int) -> None:
    title = _args(sup_pid)
    assert title.startswith("taskexec: supervisor"), title
    workers = poll(lambda: (lambda w: w if len(w) == 2 else None)(workers_by_slot(sup_pid)), 10)
    for slot, pid in workers.items():
        full = f"taskexec: worker {slot} [0/{threads}] common"
        shown = _args(pid)
        m = WORKER.match(shown)
        assert (m and m.groups() == (str(slot), "0", str(threads), "common")) or (
            full.startswith(shown) and full[len(shown)] in " ,"), shown  # cut at a word
    for pid in [sup_pid, *workers.values()]:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"TASKEXEC_TEST_MARK=1" in environ, pid
        assert psutil.Process(pid).environ().get("TASKEXEC_TEST_MARK") == "1"


def test_s21_long_command_line(tmp_path, redis_server) -> None:
    conf = Conf(tmp_path / ("c" * 120) / "conf", redis_server.url)
    h = Harness(tmp_path, conf, redis_server)
    try:
        sup = h.start("run", "--procs", "2", "--threads", "4", "--host-id", "h21", env=MARK)
        beating(redis_server.client(), 2, 20)
        _check(sup.pid, 4)
        assert _args(sup.pid) == "taskexec: supervisor h21"
        sup.send(signal.SIGTERM)
        assert wait_exit(sup, 15)[0] == 0
    finally:
        h.close()


def test_s21_one_letter_symlink_to_the_executable(tmp_path, redis_server) -> None:
    Conf(tmp_path / "c", redis_server.url)  # writes c/service_conf.yaml
    script = Path(sys.executable).with_name("taskexec")
    link = tmp_path / "t"
    if script.exists():
        link.symlink_to(script)
        argv = [str(link), "run", "--procs", "2", "--threads", "4", "--conf-dir", "c"]
    else:  # not installed as a script: the interpreter through the link
        link.symlink_to(shutil.which("python3") or sys.executable)
        argv = [str(link), "-m", "supervisor", "run", "--procs", "2", "--threads", "4",
                "--conf-dir", "c"]
    env = {**os.environ, **MARK, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "TASKEXEC_TEST_REDIS_URL": redis_server.url}
    sup = subprocess.Popen(argv, cwd=tmp_path, env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        beating(redis_server.client(), 2, 20)
        _check(sup.pid, 4)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(15) == 0
    finally:
        if sup.poll() is None:
            os.killpg(sup.pid, signal.SIGKILL)
            sup.wait(10)
