"""The shipped unit passes `systemd-analyze verify`, and `taskexec doctor` checks a
configuration against a unit file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, Conf, Harness

pytestmark = pytest.mark.timeout(60)

UNIT = ROOT / "systemd" / "taskexec.service"
SHIPPED_EXEC = "/opt/taskexec/.venv/bin/taskexec"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (.ci/run installs it)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this environment's taskexec.
    script = Path(sys.executable).with_name("taskexec")
    if not script.exists():
        script = tmp_path / "taskexec"
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
    text = UNIT.read_text()
    assert SHIPPED_EXEC in text
    unit = tmp_path / "taskexec.service"
    unit.write_text(text.replace(SHIPPED_EXEC, str(script)))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "taskexec.service" not in res.stderr, res.stderr  # no warning about our unit


def _doctor(h: Harness, unit: Path, **env: str):
    return h.cli("doctor", "--unit", str(unit), env=env)


def test_doctor_accepts_the_shipped_unit_and_configuration(tmp_path: Path) -> None:
    conf = Conf(tmp_path / "conf", None)
    conf.data = {}
    conf.update()  # the shipped defaults: graceful_timeout_s 30
    h = Harness(tmp_path, conf, None)
    res = _doctor(h, UNIT)
    out = res.stdout.decode()
    assert res.returncode == 0, out + res.stderr.decode()
    assert "ok       TimeoutStopSec 45 s" in out and "problem" not in out


def test_doctor_finds_what_the_unit_gets_wrong(tmp_path: Path) -> None:
    conf = Conf(tmp_path / "conf", None, executor={"graceful_timeout_s": 60})
    h = Harness(tmp_path, conf, None)
    res = _doctor(h, UNIT)
    out = res.stdout.decode()
    assert res.returncode == 1
    assert "problem  TimeoutStopSec is 45 s, below executor.graceful_timeout_s 60" in out, out
    bad = tmp_path / "bad.service"
    bad.write_text(UNIT.read_text().replace("NotifyAccess=main", "NotifyAccess=all")
                   .replace("OOMPolicy=continue", "OOMPolicy=stop")
                   .replace("RestartPreventExitStatus=2", "").replace("KillMode=mixed", "")
                   .replace("TimeoutStopSec=45", "TimeoutStopSec=1min 30s"))
    out = _doctor(h, bad).stdout.decode()
    assert "ok       TimeoutStopSec 90 s" in out
    for words in ("problem  NotifyAccess=all", "problem  OOMPolicy=stop",
                  "warning  RestartPreventExitStatus lacks 2", "warning  KillMode=control-group"):
        assert words in out, (words, out)
    assert _doctor(h, tmp_path / "missing.service").returncode == 3


def test_readme_shows_the_shipped_unit() -> None:
    readme = (ROOT / "README.md").read_text()
    assert UNIT.read_text().strip() in readme, "README's Operating section shows the unit file"
