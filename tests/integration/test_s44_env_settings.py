"""S44: boolean and numeric settings from the environment mean what they say, and every source
overrides the ones before it."""

from __future__ import annotations

import json
import signal

import pytest
import yaml

from tests.support import poll
from tests.support_proc import beating, wait_exit

pytestmark = pytest.mark.timeout(60)

FALSE = ["false", "False", "0", "no", "off"]
TRUE = ["true", "1", "yes", "on"]


def _show(harness, **env: str) -> dict:
    res = harness.cli("config", "show", "--json", env=env)
    assert res.returncode == 0, res.stderr.decode()
    return json.loads(res.stdout)


def test_s44_booleans_from_the_environment(harness) -> None:
    harness.env.pop("TASKEXEC_MEMORY__TRACE_ON_START", None)
    harness.env.pop("TRACE_MALLOC_ENABLED", None)
    for value in FALSE + TRUE + [""]:
        got = _show(harness, TASKEXEC_MEMORY__TRACE_ON_START=value)["memory"]["trace_on_start"]
        assert got is (value in TRUE), value  # empty counts as unset: the default, false
    assert _show(harness)["memory"]["trace_on_start"] is False
    res = harness.cli("config", "show", env={"TASKEXEC_MEMORY__TRACE_ON_START": "maybe"})
    assert res.returncode == 2 and "TASKEXEC_MEMORY__TRACE_ON_START" in res.stderr.decode()
    assert _show(harness, TRACE_MALLOC_ENABLED="0")["memory"]["trace_on_start"] is False
    assert _show(harness, TRACE_MALLOC_ENABLED="1")["memory"]["trace_on_start"] is True
    both = _show(harness, TRACE_MALLOC_ENABLED="1", TASKEXEC_MEMORY__TRACE_ON_START="0")
    assert both["memory"]["trace_on_start"] is False, "the TASKEXEC_ variable beats the alias"


def test_s44_threads_from_every_source_in_order(harness, redis_server) -> None:
    conf = harness.conf
    for name in ("MAX_CONCURRENT_TASKS", "TASKEXEC_EXECUTOR__THREADS"):
        harness.env.pop(name, None)
    assert _show(harness)["executor"]["threads"] == 5, "the built-in default"
    conf.update(executor={"threads": 6})
    assert _show(harness)["executor"]["threads"] == 6
    (conf.dir / "local.service_conf.yaml").write_text(yaml.safe_dump(
        {"executor": {"threads": 7}, "redis": {"password": "s3cret"}}))
    shown = _show(harness)
    assert shown["executor"]["threads"] == 7
    assert shown["redis"]["url"].endswith(str(redis_server.socket)), "local keeps other keys"
    assert shown["redis"]["password"] != "s3cret" and "s3cret" not in json.dumps(shown)
    assert _show(harness, MAX_CONCURRENT_TASKS="8")["executor"]["threads"] == 8
    env = {"MAX_CONCURRENT_TASKS": "8", "TASKEXEC_EXECUTOR__THREADS": "9"}
    assert _show(harness, **env)["executor"]["threads"] == 9
    (conf.dir / "local.service_conf.yaml").write_text(yaml.safe_dump(
        {"executor": {"threads": 7}}))
    r = redis_server.client()
    for flags, want in (((), 9), (("--threads", "3"), 3)):
        sup = harness.start("run", "--procs", "1", *flags, env=env)
        hb = beating(r, 1, 20)[0]
        assert hb["threads"] == want, (flags, hb["threads"])
        sup.send(signal.SIGTERM)
        assert wait_exit(sup, 15)[0] == 0
        poll(lambda: not r.smembers("TASKEXE"), 5, 0.05, "the worker left")
