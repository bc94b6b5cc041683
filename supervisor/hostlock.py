"""One live supervisor per host id: a claim in Redis, renewed by the supervisor's loop.

Two supervisors under one host id would read under the same consumer names' slots and take
each other's messages for a dead predecessor's. The claim (`{registry}:host:{host_id}`) names the
holder: machine, boot, pid and the pid's start time. A second supervisor refuses to start while
the holder lives: on this machine that is a live process with that pid and start time; on another
machine, a claim still being renewed (it lapses `heartbeat.timeout_s` after the holder's last
renewal). A holder known dead is replaced at once, without waiting for the claim to lapse.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass

import orjson
import psutil
import redis

from workers import scripts
from workers.redisconn import TRANSIENT_ERRORS
from workers.takeover import heartbeat_ages
from workers.worker import Predecessor

log = logging.getLogger("taskexec.supervisor")

# KEYS: claim. ARGV: the value the caller saw, the new value, ttl ms. Replaces a dead holder's
# claim only if it is still that holder's (another supervisor may have replaced it meanwhile).
REPLACE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class HostIdInUse(Exception):
    """Another live supervisor holds this host id; the message says which."""


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def machine_identity() -> tuple[str, str]:
    """(machine, boot): a pid names the same process only within both.

    Containers may share the image's machine id and always share the kernel's boot id, so the
    host name and the pid namespace are part of them.
    """
    machine = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    boot = _read("/proc/sys/kernel/random/boot_id")
    return f"{machine}/{socket.gethostname()}", f"{boot}/{pidns}"


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass
class Holder:
    machine: str
    boot: str
    hostname: str
    pid: int
    started: float

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def decode(cls, raw: bytes) -> Holder | None:
        try:
            data = orjson.loads(raw)
            return cls(str(data["machine"]), str(data["boot"]), str(data["hostname"]),
                       int(data["pid"]), float(data["started"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class HostLock:
    """The claim of one host id by this supervisor process."""

    def __init__(self, client: redis.Redis, registry: str, host_id: str, ttl_s: float,
                 renew_every_s: float) -> None:
        self.client = client
        self.key = f"{registry}:host:{host_id}"
        self.host_id = host_id
        self.ttl_ms = max(int(ttl_s * 1000), 1000)
        self.renew_every_s = renew_every_s
        machine, boot = machine_identity()
        pid = os.getpid()
        self.me = Holder(machine, boot, socket.gethostname(), pid, _start_time(pid) or 0.0)
        self.value = self.me.encode()
        self.previous: Holder | None = None  # a dead holder this claim replaced
        self._renew_at = 0.0

    def claim(self) -> None:
        """Take the host id, or raise HostIdInUse naming the live holder."""
        for _ in range(3):  # the holder may change between our reads
            if self.client.set(self.key, self.value, nx=True, px=self.ttl_ms):
                self._renew_at = time.monotonic() + self.renew_every_s
                return
            raw = self.client.get(self.key)
            if raw is None:
                continue
            holder = Holder.decode(raw)
            if holder is not None:
                self._refuse_if_alive(holder)
            if self.client.eval(REPLACE, 1, self.key, raw, self.value, self.ttl_ms):
                self.previous = holder
                log.info("Host id %s was held by supervisor pid %s, which is gone; taking it "
                         "over.", self.host_id, holder.pid if holder else "?")
                self._renew_at = time.monotonic() + self.renew_every_s
                return
        raise HostIdInUse(f"host id {self.host_id} keeps changing hands; try again")

    def _refuse_if_alive(self, h: Holder) -> None:
        if (h.machine, h.boot) == (self.me.machine, self.me.boot):
            started = _start_time(h.pid)
            if started is not None and abs(started - h.started) < 1.0:
                raise HostIdInUse(f"host id {self.host_id} is in use by a live supervisor "
                                  f"(pid {h.pid} on this machine)")
            return  # that process is gone: its claim is stale
        if h.machine != self.me.machine:
            left = self.client.pttl(self.key)
            raise HostIdInUse(
                f"host id {self.host_id} is in use by a live supervisor on {h.hostname} (pid "
                f"{h.pid}); its claim is renewed and lapses {max(left, 0) / 1000:.0f} s after "
                "its last renewal")
        # Same machine, another boot: every process of that boot is gone.

    def renew_due(self) -> bool:
        return time.monotonic() >= self._renew_at

    def renew(self, after_outage: bool = False) -> str | None:
        """Renew the claim; a message when another supervisor has taken the host id. Raises
        what an unreachable Redis raises: the caller reports the outage once, and says with
        `after_outage` that the claim may have lapsed meanwhile."""
        self._renew_at = time.monotonic() + self.renew_every_s
        if self.client.eval(scripts.LOCK_RENEW, 1, self.key, self.value, self.ttl_ms):
            return None
        if self.client.set(self.key, self.value, nx=True, px=self.ttl_ms):
            if after_outage:
                log.info("The claim of host id %s lapsed while Redis was unavailable; claimed "
                         "again.", self.host_id)
            else:
                log.warning("The claim of host id %s had vanished from Redis (restarted or "
                            "flushed?); claimed again.", self.host_id)
            return None
        holder = Holder.decode(self.client.get(self.key) or b"")
        who = f"pid {holder.pid} on {holder.hostname}" if holder else "an unknown holder"
        return f"host id {self.host_id} was claimed by another supervisor ({who})"

    def release(self) -> None:
        try:
            self.client.eval(scripts.LOCK_RELEASE, 1, self.key, self.value, 0)
        except TRANSIENT_ERRORS as exc:
            log.warning("Could not release the claim of host id %s: %s.", self.host_id, exc)


_CONSUMER = re.compile(r"^task_executor_(?P<host>.+)_(?P<slot>\d+)_(?P<pid>\d+)$")


def _is_live_worker(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and " ".join(p.cmdline()).startswith(
            "taskexec: worker")
    except psutil.Error:
        return False


def leftover_consumers(client: redis.Redis, lock: HostLock, streams: list[str], group: str,
                       registry: str, timeout_s: float) -> list[tuple[int, Predecessor]]:
    """(slot, predecessor) for each consumer of this host id left by an earlier supervisor.

    Its messages are taken over at once by the new worker of its slot, rather than after
    `heartbeat.timeout_s` by the cluster clean-up. On this machine a consumer is dead when no
    worker process has its pid; from another machine, when its heartbeat is that old.
    """
    prefix = f"task_executor_{lock.host_id}_"
    try:
        names = {n.decode() for n in client.smembers(registry) if n.startswith(prefix.encode())}
    except redis.ResponseError:  # a registry of the wrong type: the groups still name them
        names = set()
    for stream in streams:
        try:
            for c in client.xinfo_consumers(stream, group):
                name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                if name.startswith(prefix):
                    names.add(name)
        except redis.ResponseError:
            continue
    prev = lock.previous
    local = prev is None or (prev.machine, prev.boot) == (lock.me.machine, lock.me.boot)
    ages = heartbeat_ages(client, sorted(names)) if names and not local else {}
    out = []
    for name in sorted(names):
        m = _CONSUMER.match(name)
        if m is None or m["host"] != lock.host_id:
            continue
        if local and _is_live_worker(int(m["pid"])):
            continue
        age = ages.get(name)
        if not local and age is not None and age <= timeout_s:
            continue
        out.append((int(m["slot"]), Predecessor(name, f"left by an earlier supervisor of "
                                                      f"host {lock.host_id}")))
    return out
