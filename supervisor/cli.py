"""The `taskexec` command line."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import click
import orjson

from supervisor import deadletters, inspect, tables
from workers.exitcodes import ExitCode

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """A one-line error with taskexec's exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(code)

    def show(self, file: Any = None) -> None:
        click.echo(f"taskexec: {self.message}", err=True)


def default_host_id() -> str:
    host = socket.gethostname()
    return hashlib.md5(host.encode()).hexdigest() if len(host) > 32 else host


def settings_from(ctx_obj: dict[str, Any], overrides: dict[str, object] | None = None) -> Any:
    from workers.config import ConfigError, load_settings

    merged = dict(overrides or {})
    merged.setdefault("logging.level", ctx_obj.get("log_level"))
    try:
        return load_settings(ctx_obj.get("conf_dir"), merged)
    except ConfigError as exc:
        raise Failure(str(exc), ExitCode.USAGE) from None


def common(fn: Callable) -> Callable:
    """--conf-dir and --log-level on every command, as DESIGN §7 says."""

    @click.option("--conf-dir", type=click.Path(file_okay=False), default=None,
                  help="Configuration folder (default: $TASKEXEC_CONF_DIR, else ./conf).")
    @click.option("--log-level", default=None,
                  type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                  help="Override logging.level for this command.")
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, conf_dir: str | None, log_level: str | None, **kw: Any):
        ctx.ensure_object(dict)
        if conf_dir:
            ctx.obj["conf_dir"] = conf_dir
        if log_level:
            ctx.obj["log_level"] = log_level
        return fn(ctx.obj, **kw)

    return wrapper


def producer(obj: dict[str, Any], overrides: dict[str, object] | None = None) -> Any:
    """A Client on the configured (or embedded) Redis; exit 5 in one line when it is away."""
    from workers.client import Client
    from workers.errors import RedisUnavailable
    from workers.logs import setup_logging

    settings = settings_from(obj, overrides)
    setup_logging(settings, "cli", None if obj.get("log_level") else "WARNING")
    client = Client(settings)
    try:
        client.check()
    except RedisUnavailable as exc:
        raise Failure(str(exc), ExitCode.REDIS_UNAVAILABLE) from None
    return client


def _task_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from workers.messages import NAME_RE

    if not NAME_RE.match(value):
        raise click.BadParameter(f"{value!r} is not a task id (up to 128 letters, digits or "
                                 "_.:-)")
    return value


def emit_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
                            default=str).decode())


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="taskexec")
def cli() -> None:
    """taskexec: a task executor for document pipelines on Redis Streams."""


@cli.command()
@click.option("--procs", type=int, default=None, help="Worker processes (executor.procs).")
@click.option("--threads", type=int, default=None, help="Threads per worker (executor.threads).")
@click.option("--queue", "queues", multiple=True, help="Queue to consume (repeatable).")
@click.option("--burst", is_flag=True, help="Stop once the queues are empty and idle.")
@click.option("--host-id", default=None, help="Host id in consumer names (default: hostname).")
@common
def run(obj: dict[str, Any], procs: int | None, threads: int | None, queues: tuple[str, ...],
        burst: bool, host_id: str | None) -> None:
    """Run the supervisor and its workers until TERM or INT."""
    from supervisor.service import serve

    overrides = {"executor.procs": procs, "executor.threads": threads,
                 "queue.names": list(queues) or None}
    settings = settings_from(obj, overrides)
    code = serve(settings, host_id=host_id or default_host_id(), burst=burst,
                 reload=lambda: settings_from(obj, overrides))
    sys.exit(code)


def _read_items(data: str | None, jsonl: str | None) -> list[Any]:
    if data is not None and jsonl is not None:
        raise Failure("give --data or --jsonl, not both", ExitCode.USAGE)
    where = "--data"
    try:
        if jsonl is not None:
            items = []
            with click.open_file(jsonl, "rb") as fh:
                for n, line in enumerate(fh, 1):
                    where = f"{'standard input' if jsonl == '-' else jsonl} line {n}"
                    if line.strip():
                        items.append(orjson.loads(line))
            return items
        return [orjson.loads(data) if data is not None else {}]
    except orjson.JSONDecodeError as exc:
        raise Failure(f"{where}: task data is not valid JSON ({exc.msg})", ExitCode.USAGE) \
            from None
    except OSError as exc:
        raise Failure(f"cannot read {jsonl}: {exc}", ExitCode.USAGE) from None


@cli.command()
@click.argument("task_type")
@click.option("--data", default=None, help="The task's data as a JSON object.")
@click.option("--jsonl", default=None, help="A file (or -) of JSON objects, one task per line.")
@click.option("--id", "task_id", default=None, help="Task id (default: 32 random hex digits).")
@click.option("--queue", default="common", show_default=True)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--rerun", is_flag=True, help="Run again a task id whose earlier run is final.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the task and exit by its status.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="With --wait: give up after S seconds.")
@click.option("--json", "as_json", is_flag=True)
@common
def submit(obj: dict[str, Any], task_type: str, data: str | None, jsonl: str | None,
           task_id: str | None, queue: str, priority: int, rerun: bool, wait_: bool,
           timeout: float | None, as_json: bool) -> None:
    """Queue tasks of TASK_TYPE; prints their ids."""
    from workers.errors import SubmitError

    items = _read_items(data, jsonl)
    bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    if bad:
        raise Failure(f"task data must be JSON objects (item {bad[0] + 1} is not)", ExitCode.USAGE)
    if task_id and len(items) != 1:
        raise Failure("--id goes with a single task", ExitCode.USAGE)
    if timeout is not None and not wait_:
        raise Failure("--timeout goes with --wait", ExitCode.USAGE)
    client = producer(obj)
    try:
        ids = client.submit_many(task_type, items, ids=[task_id] if task_id else None,
                                 queue=queue, priority=priority, rerun=rerun)
    except SubmitError as exc:
        raise Failure(str(exc), ExitCode.USAGE) from None
    if not wait_:
        if as_json:
            emit_json({"ids": ids})
        else:
            click.echo("\n".join(ids))
        return
    records = [_wait_one(client, i, timeout) for i in ids]
    if as_json:
        emit_json(records if len(records) > 1 else records[0])
    else:
        for rec in records:
            click.echo(_outcome_line(rec))
    sys.exit(_status_code(records))


def _outcome_line(rec: dict[str, Any]) -> str:
    return f"{rec['id']} {rec['status']}" + (f": {rec['error']}" if rec["error"] else "")


def _status_code(records: list[dict[str, Any]]) -> int:
    return int(ExitCode.OK if all(r["status"] == "done" for r in records) else ExitCode.FAILED)


def _wait_one(client: Any, task_id: str, timeout: float | None) -> dict[str, Any]:
    from workers.errors import TaskNotFound
    from workers.redisconn import TRANSIENT_ERRORS, describe

    try:
        return client.wait(task_id, timeout)
    except TaskNotFound:
        raise Failure(f"task {task_id} not found (no record {client.keys.task_record(task_id)})",
                      ExitCode.NOT_FOUND) from None
    except TimeoutError as exc:
        raise Failure(str(exc), ExitCode.TIMED_OUT) from None
    except TRANSIENT_ERRORS as exc:
        # The timeout came while Redis was away: that, not the task, is what to look at.
        raise Failure(f"cannot reach {describe(client.settings)} at the timeout ({timeout:g} s) "
                      f"of the wait for task {task_id}: {type(exc).__name__}: "
                      f"{' '.join(str(exc).split())}", ExitCode.REDIS_UNAVAILABLE) from None


@cli.command()
@click.argument("task_id", callback=_task_id)
@click.option("--json", "as_json", is_flag=True)
@common
def status(obj: dict[str, Any], task_id: str, as_json: bool) -> None:
    """Show a task's record."""
    from workers.errors import TaskNotFound

    client = producer(obj)
    try:
        rec = client.status(task_id)
    except TaskNotFound:
        raise Failure(f"task {task_id} not found (no record {client.keys.task_record(task_id)})",
                      ExitCode.NOT_FOUND) from None
    rec.pop("task", None) if not as_json else None
    inspect.annotate(client, rec)
    if as_json:
        emit_json(rec)
        return
    for name in ("id", "task_type", "queue", "priority", "status", "progress", "ahead",
                 "retry_count", "consumer", "consumer_alive", "consumer_heartbeat_age_s",
                 "created_at", "begin_at", "finished_at",
                 "process_duration", "error", "result"):
        if name in rec and rec[name] not in (None, ""):
            value = rec[name]
            if name.endswith("_at"):
                value = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            click.echo(f"{name:>17}: {value}")
    if rec.get("warning"):
        click.echo(f"{'warning':>17}: {rec['warning']}")
    if rec.get("progress_msg"):
        click.echo("         progress:\n" + "\n".join(
            "    " + line for line in rec["progress_msg"].strip().splitlines()[-10:]))


@cli.command()
@click.argument("task_id", callback=_task_id)
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Give up after S seconds (exit 4).")
@click.option("--json", "as_json", is_flag=True)
@common
def wait(obj: dict[str, Any], task_id: str, timeout: float | None, as_json: bool) -> None:
    """Wait until a task is final; exit 0 if done, 1 if not, 3 if gone, 4 at the timeout."""
    rec = _wait_one(producer(obj), task_id, timeout)
    if as_json:
        emit_json(rec)
    else:
        click.echo(_outcome_line(rec))
    sys.exit(_status_code([rec]))


@cli.command()
@click.argument("task_id", callback=_task_id)
@common
def cancel(obj: dict[str, Any], task_id: str) -> None:
    """Cancel a queued or running task."""
    from workers.errors import TaskNotFound

    try:
        outcome = producer(obj).cancel(task_id)
    except TaskNotFound:
        raise Failure(f"task {task_id} not found", ExitCode.NOT_FOUND) from None
    messages = {"cancelled": "cancelled (it had not started)",
                "requested": "cancel requested; the running task stops at its next check"}
    text = messages.get(outcome, outcome.replace("already", "already finished:"))
    click.echo(f"{task_id}: {text}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@common
def executors(obj: dict[str, Any], as_json: bool) -> None:
    """List the executors (worker consumers) with their last heartbeat."""
    client = producer(obj)
    rows, problem = inspect.executors(client)
    if as_json:
        emit_json(rows)
    else:
        tables.print_table(rows, [
            ("name", "CONSUMER"), ("alive", "ALIVE"), ("heartbeat_age_s", "AGE S"),
            ("host", "HOST"), ("slot", "SLOT"), ("pid", "PID"), ("busy_threads", "BUSY"),
            ("rss_mb", "RSS MB"), ("done", "DONE"), ("failed", "FAILED"),
            ("current_text", "CURRENT")])
    if problem:
        click.echo(f"taskexec: {problem}", err=True)
        sys.exit(int(ExitCode.FAILED))


@cli.command()
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@common
def queues(obj: dict[str, Any], queues: tuple[str, ...], as_json: bool) -> None:
    """Show each queue stream: length, lag, pending, consumers (live ones), oldest pending age,
    dead letters."""
    rows = inspect.queues(producer(obj), list(queues) or None)
    if as_json:
        emit_json(rows)
        return
    tables.print_table(rows, [
        ("stream", "STREAM"), ("length", "LENGTH"), ("lag", "LAG"), ("pending", "PENDING"),
        ("consumers", "CONSUMERS"), ("live_consumers", "LIVE"),
        ("oldest_pending_s", "OLDEST PENDING S"), ("dead", "DEAD"), ("error", "ERROR")])


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", default="./out", show_default=True, type=click.Path(),
              help="Folder for the JSONL files, one per document.")
@click.option("--procs", type=int, default=None)
@click.option("--threads", type=int, default=None)
@click.option("--chunk-token-num", type=int, default=None, help="Tokens per chunk (128).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@common
def chunk(obj: dict[str, Any], paths: tuple[str, ...], out_dir: str, procs: int | None,
          threads: int | None, chunk_token_num: int | None, as_json: bool) -> None:
    """Chunk the documents under PATHS, end to end, and print a summary."""
    from supervisor.chunkjob import run_chunk_job

    # The progress line and the summary are the output; logs only when something goes wrong.
    obj.setdefault("log_level", "WARNING")
    settings = settings_from(obj, {"executor.procs": procs, "executor.threads": threads})
    code = run_chunk_job(settings, list(paths), out_dir, host_id=default_host_id(),
                         as_json=as_json,
                         chunk_token_num=chunk_token_num)
    sys.exit(code)


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@common
def config_show(obj: dict[str, Any], as_json: bool) -> None:
    """Print the effective configuration, secrets masked."""
    import yaml

    settings = settings_from(obj)
    data = settings.to_dict(mask_secrets=True)
    if as_json:
        emit_json(data)
    else:
        click.echo(f"# from {settings.conf_dir or 'built-in defaults'}")
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


@cli.group()
def dead() -> None:
    """List, retry or purge dead-lettered messages."""


@dead.command("list")
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@common
def dead_list(obj: dict[str, Any], queues: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Show dead letters, newest last, with their reasons."""
    rows = deadletters.list_dead(producer(obj), list(queues) or None, limit)
    if as_json:
        emit_json(rows)
        return
    tables.print_table(rows, [("queue", "QUEUE"), ("dead_id", "DEAD ID"), ("task_id", "TASK"),
                              ("deliveries", "DELIVERIES"), ("reason", "REASON")])


@dead.command("retry")
@click.argument("task_id")
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@common
def dead_retry(obj: dict[str, Any], task_id: str, queues: tuple[str, ...]) -> None:
    """Queue a dead-lettered task again (by task id or dead-letter entry id)."""
    try:
        new_id = deadletters.retry(producer(obj), task_id, list(queues) or None)
    except LookupError as exc:
        raise Failure(str(exc), ExitCode.NOT_FOUND) from None
    click.echo(f"{new_id}: queued again")


@dead.command("purge")
@click.option("--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@common
def dead_purge(obj: dict[str, Any], queues: tuple[str, ...]) -> None:
    """Delete every dead letter of the queues."""
    count = deadletters.purge(producer(obj), list(queues) or None)
    click.echo(f"purged {count} dead letter(s)")


# `taskexec memory` lives in its own module; it needs the helpers above.
from supervisor.memorycli import memory  # noqa: E402

cli.add_command(memory)


@cli.command()
@click.option("--unit", "unit_path", type=click.Path(dir_okay=False), default=None,
              help="The unit file (default: /etc/systemd/system/taskexec.service).")
@common
def doctor(obj: dict[str, Any], unit_path: str | None) -> None:
    """Check the configuration against the systemd unit: stop timeout, kill mode, restarts."""
    from supervisor.doctor import run as run_doctor

    sys.exit(run_doctor(unit_path, obj.get("conf_dir")))


def main() -> None:
    from workers.redisconn import TRANSIENT_ERRORS

    logging.captureWarnings(True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        cli(prog_name="taskexec")
    except TRANSIENT_ERRORS as exc:
        # Redis went away (or turned read-only) in the middle of a command: one line, exit 5,
        # whichever command it was.
        text = " ".join(str(exc).split())
        click.echo(f"taskexec: Redis unavailable: {type(exc).__name__}: {text}", err=True)
        sys.exit(int(ExitCode.REDIS_UNAVAILABLE))
