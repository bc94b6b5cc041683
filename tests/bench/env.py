"""The bench's own world: a private redis-server, `taskexec run` services, and their cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]
STREAM = "te.0.common"  # every bench task goes to queue common, priority 0
GROUP = "rag_flow_svr_task_broker"
REGISTRY = "TASKEXE"
# Variables that would change the service's configuration behind the bench's back.
FOREIGN_ENV = ("MAX_CONCURRENT_TASKS", "WORKER_HEARTBEAT_TIMEOUT", "TRACE_MALLOC_ENABLED",
               "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "TASKEXEC_CONF_DIR")


class BenchError(RuntimeError):
    """A run that could not be measured (a deadline passed, a process died)."""


def poll(fn: Callable[[], Any], timeout_s: float, interval_s: float, what: str) -> Any:
    """Call fn until it returns something truthy; BenchError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"{what} not reached within {timeout_s:.0f} s")
        time.sleep(interval_s)


class Processes:
    """Every process the bench started; all of them and their descendants die at the end."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen] = []

    def start(self, args: list[str], *, cwd: Path, env: dict[str, str],
              stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL
              ) -> subprocess.Popen:
        # A new session each, so Ctrl-C reaches only the bench, which then kills them in order.
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, start_new_session=True)
        self._procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a process and every descendant (workers live in process groups of their own)."""
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        # The parent first, so a supervisor cannot respawn the workers killed after it.
        if proc.poll() is None:
            proc.kill()
        for p in family:
            try:
                p.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
            except psutil.Error:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        if proc in self._procs:
            self._procs.remove(proc)

    def kill_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.kill(proc)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise BenchError("no redis-server on PATH")
    return found


def free_port() -> int:
    """A free TCP port of 127.0.0.1, never 6379 (the machine's own Redis may be there)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port
    raise BenchError("no free TCP port found")


class BenchRedis:
    """A private redis-server in the bench's folder: on a unix socket (no TCP port at all), or
    with `tcp` on a free port of 127.0.0.1."""

    def __init__(self, folder: Path, procs: Processes, tcp: bool = False) -> None:
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.port = free_port() if tcp else 0
        self.procs = procs
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}"

    @property
    def transport(self) -> str:
        return f"TCP 127.0.0.1:{self.port}" if self.port else "a unix socket"

    def start(self) -> redis.Redis:
        # AOF off and no snapshots, like the test suite's servers: the bench measures taskexec,
        # not the disk.
        where = (["--port", str(self.port), "--bind", "127.0.0.1"] if self.port else
                 ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"])
        args = [redis_binary(), *where, "--dir", str(self.folder), "--save", "",
                "--appendonly", "no", "--logfile", str(self.folder / "redis.log")]
        self.proc = self.procs.start(args, cwd=self.folder, env=dict(os.environ))
        client = self.client()
        poll(lambda: self._answers(client), 10, 0.01, f"redis-server at {self.socket}")
        return client

    def _answers(self, client: redis.Redis) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"redis-server exited with status {self.proc.returncode}")
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0


class Bench:
    """Temp folder, Redis, configuration and producer shared by every scenario of one run."""

    def __init__(self, *, tcp: bool = False, keep: bool = False) -> None:
        self.keep = keep
        self.procs = Processes()
        self.tmp = Path(tempfile.mkdtemp(prefix="taskexec-bench-"))
        self.server = BenchRedis(self.tmp, self.procs, tcp=tcp)
        self.conf_dir = self.tmp / "conf"
        self.polls = 0  # commands the bench itself sent while a measurement ran

    def __enter__(self) -> Bench:
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _setup(self) -> None:
        self.r = self.server.start()
        self.conf_dir.mkdir()
        conf = {
            "redis": {"url": self.server.url},
            "handlers": {"spin": "tests.bench.handlers:spin",
                         "count": "tests.bench.handlers:count"},
        }
        (self.conf_dir / "service_conf.yaml").write_text(yaml.safe_dump(conf))
        from workers.client import Client
        from workers.config import load_settings

        self.settings = load_settings(str(self.conf_dir), environ={})
        self.client = Client(self.settings)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("TASKEXEC_") and k not in FOREIGN_ENV}
        # The service runs the code of the tree this bench is in, whatever is installed.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env["TASKEXEC_BENCH_REDIS_URL"] = self.server.url

    def __exit__(self, *exc: object) -> None:
        self.procs.kill_all()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def flush(self) -> None:
        self.r.flushall()
        self.r.config_resetstat()

    def taskexec(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "supervisor", *args, "--conf-dir", str(self.conf_dir)]

    def run_cli(self, *args: str, timeout_s: float = 120) -> float:
        """Run a taskexec command to its end; its wall time in seconds, start-up included."""
        start = time.perf_counter()
        proc = self.procs.start(self.taskexec(*args), cwd=self.tmp, env=self.env,
                                stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.procs.kill(proc)
            raise BenchError(f"taskexec {args[0]} did not end within {timeout_s:.0f} s") from None
        elapsed = time.perf_counter() - start
        self.procs.kill(proc)
        if proc.returncode != 0:
            raise BenchError(f"taskexec {args[0]} exited with status {proc.returncode}: "
                             f"{err.decode(errors='replace')[-500:]}")
        return elapsed

    def service(self, procs: int, threads: int) -> Service:
        return Service(self, procs, threads)

    def drained(self, n: int, timeout_s: float, interval_s: float = 0.02) -> None:
        """Wait until n messages of the bench stream were read and acknowledged."""
        def done() -> bool:
            self.polls += 1
            try:
                groups = self.r.xinfo_groups(STREAM)
            except redis.ResponseError:
                return False
            g = next((g for g in groups if g.get("name") == GROUP.encode()), None)
            if not g or int(g["pending"]) != 0:
                return False
            if "entries-read" in g:
                return int(g["entries-read"] or 0) >= n
            # Redis before 7 does not count reads: the group must have reached the last entry
            # (the bench's streams hold exactly its n tasks).
            self.polls += 1
            last = self.r.xrevrange(STREAM, count=1)
            return bool(last) and last[0][0] == g["last-delivered-id"]

        poll(done, timeout_s, interval_s, f"{n} tasks done")

    def records(self, ids: list[str], *fields: str) -> list[dict[str, str]]:
        """Fields of many task records, pipelined; missing values are empty strings."""
        out: list[dict[str, str]] = []
        for start in range(0, len(ids), 2000):
            pipe = self.r.pipeline(transaction=False)
            for task_id in ids[start:start + 2000]:
                pipe.hmget(f"te:task:{task_id}", *fields)
            for values in pipe.execute():
                out.append({f: (v or b"").decode() for f, v in zip(fields, values, strict=True)})
        return out


class Service:
    """One `taskexec run` in its own session against the bench's Redis, stopped on exit."""

    def __init__(self, bench: Bench, procs: int, threads: int) -> None:
        self.bench = bench
        self.n = procs
        self.threads = threads
        self.proc: subprocess.Popen | None = None
        # Workers ever seen: after the supervisor is gone they are no longer its children.
        self._seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> Service:
        self.log = (self.bench.tmp / "service.log").open("ab")
        self.started_at = time.time()
        self.proc = self.bench.procs.start(
            self.bench.taskexec("run", "--procs", str(self.n), "--threads", str(self.threads)),
            cwd=self.bench.tmp, env=self.bench.env, stderr=self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.log.close()

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"taskexec run exited with status {self.proc.returncode}; see "
                             f"{self.bench.tmp / 'service.log'}")

    def first_heartbeats(self) -> dict[str, float]:
        """Consumer name -> Redis time of its first heartbeat, for the registered consumers."""
        r = self.bench.r
        out = {}
        for name in r.smembers(REGISTRY):
            first = r.zrange(name, 0, 0, withscores=True)
            if first:
                out[name.decode()] = first[0][1]
        self.bench.polls += 1 + len(out)
        return out

    def wait_booted(self, timeout_s: float = 30) -> float:
        """Wait for a heartbeat of every worker; returns the earliest one (epoch seconds)."""
        def booted() -> dict[str, float] | None:
            self._check_alive()
            self.worker_pids()
            beats = self.first_heartbeats()
            return beats if len(beats) >= self.n else None

        return min(poll(booted, timeout_s, 0.005, f"{self.n} worker(s) booted").values())

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        try:
            live = [p for p in psutil.Process(self.proc.pid).children()
                    if p.status() != psutil.STATUS_ZOMBIE]
        except psutil.Error:
            return []
        for p in live:
            self._seen.setdefault(p.pid, p)
        return sorted(p.pid for p in live)

    def rss_mb(self) -> tuple[float, list[float]]:
        """RSS of the supervisor and of each worker, in MB (10^6 bytes, as the targets say)."""
        assert self.proc is not None
        return _rss_mb(self.proc.pid), [_rss_mb(p) for p in self.worker_pids()]

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the workers."""
        total = 0.0
        for pid in self.worker_pids():
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self, timeout_s: float = 20) -> None:
        """Graceful stop (TERM), then SIGKILL of the whole family at the deadline."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.bench.procs.kill(self.proc)
        for p in self._seen.values():
            try:
                p.kill()  # psutil checks the creation time: a reused pid is left alone
            except psutil.Error:
                pass


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 1e6
    except psutil.Error:
        return float("nan")

