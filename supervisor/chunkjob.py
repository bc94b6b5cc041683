"""`taskexec chunk`: submit one chunk task per document, run the workers in burst mode, report."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import orjson

from supervisor.arbiter import Supervisor
from supervisor.service import RedisSession
from workers.client import Client
from workers.errors import RedisUnavailable
from workers.exitcodes import ExitCode
from workers.handlers.readers import SUPPORTED_EXTENSIONS
from workers.logs import setup_logging

log = logging.getLogger("taskexec.chunk")


def discover(paths: list[str]) -> list[tuple[str, str]]:
    """(absolute path, document name) of each supported file, in a stable order.

    A file named on the command line is taken whatever its extension (the handler says what is
    wrong with it); a folder contributes its supported files, named by their path below the
    folder's own name, so equal file names in different folders never share an output file.
    """
    docs: list[tuple[str, str]] = []
    for raw in paths:
        root = Path(raw).resolve()
        if root.is_file():
            docs.append((str(root), root.name))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = Path(dirpath) / fn
                if full.suffix.lower() in SUPPORTED_EXTENSIONS and full.is_file():
                    docs.append((str(full), f"{root.name}/{full.relative_to(root)}"))
    seen: dict[str, int] = {}
    unique = []
    for path, name in docs:
        n = seen.get(name, 0)
        seen[name] = n + 1
        unique.append((path, name if n == 0 else f"{name}~{n + 1}"))
    return unique


class Progress:
    """Follows the records of the job's tasks and draws one progress line."""

    def __init__(self, client: Client, ids: list[str], stream: Any) -> None:
        self.client = client
        self.remaining = list(ids)
        self.total = len(ids)
        self.done = self.chunks = self.tokens = 0
        self.failures: list[tuple[str, str]] = []
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._drawn_at = 0.0

    def poll(self) -> None:
        if not self.remaining:
            return
        pipe = self.client.redis.pipeline(transaction=False)
        for task_id in self.remaining:
            pipe.hmget(self.client.keys.task_record(task_id), "status", "result", "error")
        still = []
        for task_id, (status, result, error) in zip(self.remaining, pipe.execute(), strict=True):
            status = status.decode() if status else "missing"
            if status == "done":
                self.done += 1
                out = orjson.loads(result) if result else {}
                self.chunks += int(out.get("chunks", 0))
                self.tokens += int(out.get("tokens", 0))
            elif status in ("failed", "cancelled", "dead", "missing"):
                self.failures.append((task_id, (error or b"").decode() or status))
            else:
                still.append(task_id)
        self.remaining = still

    def tick(self, sup: Supervisor | None = None) -> None:
        now = time.monotonic()
        if now - self._drawn_at < (0.5 if self.tty else 5.0):
            return
        self._drawn_at = now
        self.poll()
        finished = self.total - len(self.remaining)
        line = (f"chunk: {finished}/{self.total} documents, {self.chunks} chunks, "
                f"{len(self.failures)} failed, {now - self.started:.1f} s")
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _job_settings(settings: Any, queue: str) -> Any:
    return dataclasses.replace(settings, queue=dataclasses.replace(settings.queue, names=(queue,)))


def run_chunk_job(settings: Any, paths: list[str], out_dir: str, *, host_id: str,
                  as_json: bool, chunk_token_num: int | None) -> int:
    docs = discover(paths)
    if not docs:
        click.echo(f"taskexec: no documents ({' '.join(SUPPORTED_EXTENSIONS)}) under "
                   f"{' '.join(paths)}", err=True)
        return int(ExitCode.NOT_FOUND)
    out = str(Path(out_dir).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    # A queue of its own: other hosts' workers on a shared Redis must not take these tasks,
    # since the paths are on this machine.
    job_queue = f"chunk-{uuid.uuid4().hex[:12]}"
    settings = _job_settings(settings, job_queue)
    setup_logging(settings, "supervisor")
    extra = {"chunk_token_num": chunk_token_num} if chunk_token_num else {}
    items = [{"path": p, "name": n, "out": out, **extra} for p, n in docs]
    started = time.monotonic()
    try:
        with RedisSession(settings, host_id) as redis_client:
            client = Client(settings, redis_client)
            ids = client.submit_many("chunk", items, queue=job_queue)
            progress = Progress(client, ids, sys.stderr)
            sup = Supervisor(settings, host_id=host_id, client=redis_client, burst=True,
                             on_tick=progress.tick)
            code = sup.run()
            progress.poll()
            redis_client.delete(*client.keys.streams(job_queue, settings.queue.priorities))
    except RedisUnavailable as exc:
        click.echo(f"taskexec: {exc}", err=True)
        return int(ExitCode.REDIS_UNAVAILABLE)
    if progress.tty:
        sys.stderr.write("\n")
    return _summary(progress, time.monotonic() - started, out, as_json, code)


def _summary(p: Progress, seconds: float, out: str, as_json: bool, sup_code: int) -> int:
    summary = {
        "documents": p.total, "done": p.done, "chunks": p.chunks, "tokens": p.tokens,
        "failures": len(p.failures), "unfinished": len(p.remaining),
        "seconds": round(seconds, 2), "documents_per_second": round(p.total / seconds, 1),
        "output": out, "failed": [{"id": i, "error": e} for i, e in p.failures[:50]],
    }
    if as_json:
        click.echo(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        for task_id, error in p.failures[:10]:
            click.echo(f"failed: {task_id}: {error}", err=True)
        click.echo(f"documents {p.total}, chunks {p.chunks}, tokens {p.tokens}, failures "
                   f"{len(p.failures)}, unfinished {len(p.remaining)}, seconds {seconds:.1f}, "
                   f"documents/s {p.total / seconds:.1f}; output in {out}")
    if sup_code not in (ExitCode.OK,):
        return int(sup_code)
    return int(ExitCode.OK if p.done == p.total else ExitCode.FAILED)
