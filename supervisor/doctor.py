"""`taskexec doctor`: check a configuration against the systemd unit that runs it.

Most mistakes here show only on the day they matter: a stop timeout shorter than the drain
kills tasks on every deploy, OOMPolicy=stop takes the whole host down for one worker, a missing
RestartPreventExitStatus=2 restarts a broken configuration forever.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.arbiter import QUICK_STOP_S, STOP_MARGIN_S
from supervisor.service import SUPERVISOR_SOCKET_TIMEOUT_S
from supervisor.unitfile import INFINITY, Unit, timespan

STOP_SLACK_S = 15.0  # what the shipped unit allows beyond executor.graceful_timeout_s
DEFAULT_TIMEOUT_STOP_S = 90.0  # systemd's DefaultTimeoutStopSec
OK, WARNING, PROBLEM = "ok", "warning", "problem"


@dataclass(frozen=True)
class Finding:
    level: str
    text: str


def unit_environment(unit: Unit) -> dict[str, str]:
    """The variables the unit's Environment= lines set (EnvironmentFile= is not read)."""
    env: dict[str, str] = {}
    for line in unit.sections.get("Service", {}).get("Environment", []):
        for item in shlex.split(line):
            name, sep, value = item.partition("=")
            if sep:
                env[name] = value
    return env


def conf_dir_of(unit: Unit) -> str | None:
    """The --conf-dir of ExecStart, else TASKEXEC_CONF_DIR from Environment=."""
    argv = unit.exec_start()
    for i, arg in enumerate(argv):
        if arg == "--conf-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--conf-dir="):
            return arg.split("=", 1)[1]
    return unit_environment(unit).get("TASKEXEC_CONF_DIR")


def check(settings: Any, unit: Unit) -> list[Finding]:
    out: list[Finding] = []
    for part in (_readiness, _stop, _restart, _paths, _timeouts):
        out += part(settings, unit)
    return out


def _svc(unit: Unit, key: str, default: str | None = None) -> str | None:
    return unit.get("Service", key, default)


def _readiness(settings: Any, unit: Unit) -> list[Finding]:
    out = []
    kind = _svc(unit, "Type", "simple")
    out.append(Finding(OK, "Type=notify: READY=1 once every worker has booted") if kind ==
               "notify" else Finding(PROBLEM, f"Type={kind}: use Type=notify, so systemd "
                                              "waits for the workers and the watchdog works"))
    access = _svc(unit, "NotifyAccess", "main")
    out.append(Finding(OK, f"NotifyAccess={access}") if access in ("main", "exec") else Finding(
        PROBLEM, f"NotifyAccess={access}: use main; only the supervisor talks to systemd"))
    reload = _svc(unit, "ExecReload", "") or ""
    out.append(Finding(OK, "ExecReload sends HUP") if "HUP" in reload else Finding(
        WARNING, "no ExecReload with kill -HUP $MAINPID: `systemctl reload` cannot reread the "
                 "configuration"))
    watchdog = timespan(_svc(unit, "WatchdogSec"), 0.0) or 0.0
    if watchdog and watchdog < 4 * SUPERVISOR_SOCKET_TIMEOUT_S:
        out.append(Finding(WARNING, f"WatchdogSec={watchdog:g}: a Redis that stops answering "
                                    "can hold the supervisor's loop "
                                    f"{SUPERVISOR_SOCKET_TIMEOUT_S:g} s per call; allow 30 s"))
    return out


def _stop(settings: Any, unit: Unit) -> list[Finding]:
    out = []
    graceful = settings.executor.graceful_timeout_s
    stop = timespan(_svc(unit, "TimeoutStopSec") or _svc(unit, "TimeoutSec"),
                    DEFAULT_TIMEOUT_STOP_S)
    needed = graceful + STOP_MARGIN_S + QUICK_STOP_S
    shown = "infinity" if stop == INFINITY else f"{stop:g} s"
    if stop < needed:
        out.append(Finding(PROBLEM, f"TimeoutStopSec is {shown}, below executor.graceful_timeout_s "
                                    f"{graceful:g} s + {STOP_MARGIN_S + QUICK_STOP_S:g} s: systemd "
                                    "would kill workers still draining; raise it to "
                                    f"{graceful + STOP_SLACK_S:g}"))
    elif stop < graceful + STOP_SLACK_S:
        out.append(Finding(WARNING, f"TimeoutStopSec is {shown}: enough for the drain "
                                    f"({needed:g} s) but with little slack; "
                                    f"{graceful + STOP_SLACK_S:g} is advised"))
    else:
        out.append(Finding(OK, f"TimeoutStopSec {shown} >= executor.graceful_timeout_s "
                               f"{graceful:g} + {STOP_SLACK_S:g}"))
    mode = _svc(unit, "KillMode", "control-group")
    if mode == "mixed":
        out.append(Finding(OK, "KillMode=mixed: TERM to the supervisor, which drains the workers"))
    elif mode == "control-group":
        out.append(Finding(WARNING, "KillMode=control-group: TERM reaches every worker at once "
                                    "(handled as one stop), but mixed is advised"))
    else:
        out.append(Finding(PROBLEM, f"KillMode={mode}: workers or task processes would outlive "
                                    "a stop timeout; use KillMode=mixed"))
    sig = _svc(unit, "KillSignal", "SIGTERM")
    if sig not in ("SIGTERM", "TERM", "SIGINT", "INT", "15", "2"):
        out.append(Finding(PROBLEM, f"KillSignal={sig}: use SIGTERM (a graceful stop)"))
    return out


def _restart(settings: Any, unit: Unit) -> list[Finding]:
    out = []
    restart = _svc(unit, "Restart", "no")
    out.append(Finding(OK, f"Restart={restart}") if restart in (
        "on-failure", "always", "on-abnormal") else Finding(
        WARNING, f"Restart={restart}: the service stays down after a crash or a lost Redis"))
    if "2" not in unit.all("Service", "RestartPreventExitStatus"):
        out.append(Finding(WARNING, "RestartPreventExitStatus lacks 2: a configuration error "
                                    "(exit 2) would be restarted over and over"))
    policy = _svc(unit, "OOMPolicy", "stop")
    out.append(Finding(OK, "OOMPolicy=continue") if policy == "continue" else Finding(
        PROBLEM, f"OOMPolicy={policy}: one worker killed by the OOM killer would stop the whole "
                 "unit; use continue (the supervisor respawns it)"))
    return out


def _writable(unit: Unit) -> list[Path]:
    roots = {"StateDirectory": "/var/lib", "LogsDirectory": "/var/log",
             "CacheDirectory": "/var/cache", "RuntimeDirectory": "/run"}
    paths = [Path(roots[k]) / d for k in roots for d in unit.all("Service", k)]
    paths += [Path(p.lstrip("-+")) for p in unit.all("Service", "ReadWritePaths")]
    if (_svc(unit, "PrivateTmp") or "").lower() in ("yes", "true", "1", "on"):
        paths += [Path("/tmp"), Path("/var/tmp")]
    return paths


def _paths(settings: Any, unit: Unit) -> list[Finding]:
    if (_svc(unit, "ProtectSystem") or "").lower() not in ("strict",):
        return []
    base = Path(_svc(unit, "WorkingDirectory") or "/")
    wanted = {"memory.snapshot_dir": settings.memory.snapshot_dir}
    if settings.logging.dir:
        wanted["logging.dir"] = settings.logging.dir
    if settings.embedded:
        wanted["redis.embedded.dir"] = settings.redis.embedded.dir
    out = []
    writable = _writable(unit)
    for key, value in wanted.items():
        resolved = Path(os.path.normpath(base / value))
        if not any(resolved == w or w in resolved.parents for w in writable):
            out.append(Finding(PROBLEM, f"{key} ({resolved}) is read-only under "
                                        "ProtectSystem=strict; put it below StateDirectory or "
                                        "LogsDirectory, or add it to ReadWritePaths"))
    return out


def _timeouts(settings: Any, unit: Unit) -> list[Finding]:
    out = []
    s = settings
    if s.supervisor.worker_timeout_s <= s.queue.block_s + s.redis.socket_timeout_s:
        out.append(Finding(PROBLEM, f"supervisor.worker_timeout_s {s.supervisor.worker_timeout_s:g}"
                                    f" is not above queue.block_s + redis.socket_timeout_s "
                                    f"({s.queue.block_s + s.redis.socket_timeout_s:g}): a worker "
                                    "waiting on a slow Redis would be killed as unresponsive"))
    if s.heartbeat.timeout_s < 2 * s.heartbeat.interval_s:
        out.append(Finding(WARNING, f"heartbeat.timeout_s {s.heartbeat.timeout_s:g} is below two "
                                    f"heartbeat intervals ({2 * s.heartbeat.interval_s:g}): one "
                                    "late beat makes a live worker look dead"))
    return out


DEFAULT_UNIT = Path("/etc/systemd/system/taskexec.service")


def run(unit_path: str | None, conf_dir: str | None) -> int:
    """Print each finding on a line; the exit code: 0 fine, 1 problems, 2 unusable
    configuration, 3 no unit file."""
    import click

    from supervisor import unitfile
    from workers.config import ConfigError, load_settings
    from workers.exitcodes import ExitCode

    path = Path(unit_path) if unit_path else DEFAULT_UNIT
    if not path.is_file():
        click.echo(f"taskexec: no unit file at {path}; name one with --unit", err=True)
        return int(ExitCode.NOT_FOUND)
    try:
        unit = unitfile.parse(path)
        environ = {**os.environ, **unit_environment(unit)}
        folder = conf_dir or conf_dir_of(unit)
        if folder and not Path(folder).is_dir():
            click.echo(f"taskexec: the unit's configuration folder {folder} is not here; "
                       "name one with --conf-dir", err=True)
            return int(ExitCode.USAGE)
        settings = load_settings(folder, environ=environ)
        findings = check(settings, unit)
    except (ConfigError, ValueError, OSError) as exc:
        click.echo(f"taskexec: {exc}", err=True)
        return int(ExitCode.USAGE)
    click.echo(f"# {path} against {settings.conf_dir or 'built-in defaults'}")
    for f in findings:
        click.echo(f"{f.level:<8} {f.text}")
    return int(ExitCode.FAILED if any(f.level == PROBLEM for f in findings) else ExitCode.OK)
