"""Unit tests of configuration loading and validation (workers.config)."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from workers.config import ConfigError, load_settings, resolve_conf_dir
from workers.config_schema import schema

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "conf" / "service_conf.yaml"
PACKAGED = REPO / "workers" / "defaults" / "service_conf.yaml"


def write(folder: Path, text: str, name: str = "service_conf.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(folder: Path, environ: dict[str, str] | None = None, **overrides: object):
    return load_settings(folder, overrides or None, environ or {})


def error_of(folder: Path, environ: dict[str, str] | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(folder, environ, **overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# Defaults and the shipped files


def test_defaults_match_the_design(tmp_path):
    s = load(tmp_path)
    assert s.conf_dir == tmp_path
    assert s.embedded
    assert (s.redis.url, s.redis.host, s.redis.db, s.redis.password) == (None, None, 0, None)
    assert (s.redis.socket_timeout_s, s.redis.connect_timeout_s) == (10.0, 30.0)
    assert s.redis.max_connections == 5 + 4
    assert (s.redis.embedded.dir, s.redis.embedded.binary, s.redis.sentinel) == (
        "./data",
        None,
        None,
    )
    assert s.queue.names == ("common",)
    assert s.queue.priorities == (1, 0)
    assert (s.queue.block_s, s.queue.max_attempts, s.queue.max_message_bytes) == (1.0, 3, 1048576)
    assert (s.executor.procs, s.executor.threads, s.executor.graceful_timeout_s) == (1, 5, 30.0)
    assert (s.executor.max_tasks_per_worker, s.executor.task_time_limit_s) == (0, 0.0)
    assert (s.supervisor.worker_timeout_s, s.supervisor.restart_backoff_max_s) == (300.0, 30.0)
    assert s.supervisor.boot_failures_max == 5
    assert (s.heartbeat.interval_s, s.heartbeat.timeout_s, s.heartbeat.retention_s) == (
        10.0,
        120.0,
        1800.0,
    )
    assert (s.cleanup.interval_s, s.cleanup.lock_ttl_s) == (30.0, 60.0)
    assert (s.store.max_log_chars, s.store.cancel_ttl_s, s.store.result_ttl_s) == (
        3000,
        86400.0,
        604800.0,
    )
    assert (s.memory.snapshot_dir, s.memory.trace_on_start, s.memory.max_rss_mb) == (
        "./logs",
        False,
        0,
    )
    assert (s.logging.level, s.logging.format, s.logging.dir) == ("INFO", "text", None)
    assert dict(s.handlers) == {
        "noop": "workers.handlers.builtin:noop",
        "sleep": "workers.handlers.builtin:sleep",
        "fail": "workers.handlers.builtin:fail",
        "chunk": "workers.handlers.chunk:run",
    }


def test_default_keys(tmp_path):
    assert dataclasses.asdict(load(tmp_path).keys) == {
        "queue_stream": "te.{priority}.{queue}",
        "dead_stream": "te.dead.{queue}",
        "task": "te:task:{id}",
        "cancel": "{id}-cancel",
        "group": "rag_flow_svr_task_broker",
        "registry": "TASKEXE",
        "cleanup_lock": "clean_task_executor",
        "delayed": "te:delayed",
    }


def test_shipped_conf_loads_and_equals_the_builtin_defaults(tmp_path):
    assert load(SHIPPED.parent).to_dict(mask_secrets=False) == load(tmp_path).to_dict(
        mask_secrets=False
    )


def test_packaged_copy_is_identical_to_the_shipped_conf():
    assert PACKAGED.read_bytes() == SHIPPED.read_bytes()


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for name, value in tree.items():
        if isinstance(value, dict) and name != "sentinel":
            keys |= flat_keys(value, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_every_schema_key_is_in_the_shipped_conf():
    sch = schema()
    shipped = flat_keys(yaml.safe_load(SHIPPED.read_text()))
    assert shipped == set(sch.specs) | {k for k in sch.defaults if k.startswith("handlers.")}


def test_every_key_in_the_shipped_conf_is_documented_by_a_comment():
    previous = ""
    for line in SHIPPED.read_text().splitlines():
        stripped = line.strip()
        if re.match(r"[a-z_]+:", stripped) and line.startswith("  "):
            assert previous.startswith("#"), f"no comment above {stripped!r}"
        if stripped:
            previous = stripped


def test_no_conf_folder_means_builtin_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_conf_dir(None, {}) is None
    s = load_settings(environ={})
    assert s.conf_dir is None
    assert s.to_dict() == load(tmp_path).to_dict()


# The conf folder


def test_conf_dir_order(tmp_path, monkeypatch):
    flag, env, local = tmp_path / "flag", tmp_path / "env", tmp_path / "conf"
    for folder in (flag, env, local):
        folder.mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_conf_dir(flag, {"TASKEXEC_CONF_DIR": str(env)}) == flag
    assert resolve_conf_dir(None, {"TASKEXEC_CONF_DIR": str(env)}) == env
    assert resolve_conf_dir(None, {"TASKEXEC_CONF_DIR": ""}) == Path("conf")


def test_missing_conf_dir_is_an_error_naming_its_source(tmp_path):
    with pytest.raises(ConfigError, match="^--conf-dir: .*nope: no such folder"):
        resolve_conf_dir(tmp_path / "nope", {})
    with pytest.raises(ConfigError, match="^TASKEXEC_CONF_DIR: .*nope: no such folder"):
        load_settings(environ={"TASKEXEC_CONF_DIR": str(tmp_path / "nope")})


def test_conf_dir_from_the_environment_is_read(tmp_path):
    write(tmp_path, "executor: {procs: 3}\n")
    assert load_settings(environ={"TASKEXEC_CONF_DIR": str(tmp_path)}).executor.procs == 3


# S44: booleans and numbers from the environment, and the precedence of the sources

TRACE = "TASKEXEC_MEMORY__TRACE_ON_START"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("false", False), ("False", False), ("0", False), ("no", False), ("off", False)]
    + [("true", True), ("1", True), ("yes", True), ("on", True), ("TRUE", True), (" On ", True)],
)
def test_s44_boolean_spellings(tmp_path, text, expected):
    assert load(tmp_path, {TRACE: text}).memory.trace_on_start is expected


def test_s44_empty_variable_counts_as_unset(tmp_path):
    assert load(tmp_path, {TRACE: ""}).memory.trace_on_start is False
    write(tmp_path, "memory: {trace_on_start: true}\n")
    assert load(tmp_path, {TRACE: ""}).memory.trace_on_start is True
    assert load(tmp_path, {"TASKEXEC_EXECUTOR__THREADS": ""}).executor.threads == 5


def test_s44_unset_variable_gives_the_default(tmp_path):
    assert load(tmp_path, {}).memory.trace_on_start is False


def test_s44_maybe_is_an_error_naming_the_variable(tmp_path):
    message = error_of(tmp_path, {TRACE: "maybe"})
    assert message.startswith(f"{TRACE}: memory.trace_on_start: ")
    assert "'maybe'" in message


@pytest.mark.parametrize(("text", "expected"), [("0", False), ("1", True)])
def test_s44_trace_malloc_enabled_alias(tmp_path, text, expected):
    write(tmp_path, f"memory: {{trace_on_start: {str(not expected).lower()}}}\n")
    assert load(tmp_path, {"TRACE_MALLOC_ENABLED": text}).memory.trace_on_start is expected


def test_s44_alias_yields_to_the_taskexec_variable(tmp_path):
    env = {"TRACE_MALLOC_ENABLED": "1", TRACE: "off"}
    assert load(tmp_path, env).memory.trace_on_start is False


@pytest.mark.parametrize("sources", range(6))
def test_s44_threads_precedence_chain(tmp_path, sources):
    # Each source sets a different value; the last one applied must win.
    if sources >= 1:
        write(tmp_path, "executor: {threads: 6, procs: 2}\n")
    if sources >= 2:
        write(tmp_path, "executor: {threads: 7}\n", "local.service_conf.yaml")
    env = {}
    if sources >= 3:
        env["MAX_CONCURRENT_TASKS"] = "8"
    if sources >= 4:
        env["TASKEXEC_EXECUTOR__THREADS"] = "9"
    flags = {"executor.threads": 10} if sources >= 5 else {"executor.threads": None}
    s = load_settings(tmp_path, flags, env)
    assert s.executor.threads == 5 + sources
    assert s.executor.procs == (2 if sources >= 1 else 1)
    assert s.redis.max_connections == s.executor.threads + 4


def test_s44_local_file_deep_merges_the_redis_section(tmp_path):
    write(tmp_path, "redis: {host: 'h:6380', db: 1, password: secret, socket_timeout_s: 12}\n")
    write(tmp_path, "redis:\n  db: 2\n", "local.service_conf.yaml")
    r = load(tmp_path).redis
    assert (r.host, r.db, r.password, r.socket_timeout_s) == ("h:6380", 2, "secret", 12.0)


def test_s44_to_dict_masks_the_password_and_a_password_in_the_url(tmp_path):
    write(tmp_path, "redis: {host: 'h:6380', password: hunter2}\n")
    shown = load(tmp_path).to_dict()
    assert shown["redis"]["password"] == "******"
    assert "hunter2" not in repr(shown)
    assert load(tmp_path).to_dict(mask_secrets=False)["redis"]["password"] == "hunter2"

    url = "redis://alice:hunter2@r.example:6390/3?password=also&db=3"
    shown = load(tmp_path, {"TASKEXEC_REDIS__URL": url}, **{"redis.host": ""}).to_dict()
    assert shown["redis"]["url"] == "redis://alice:******@r.example:6390/3?password=******&db=3"
    assert "hunter2" not in repr(shown) and "also" not in repr(shown)


def test_to_dict_masks_the_sentinel_password_and_is_plain_data(tmp_path):
    sentinel = '{"master": "m", "nodes": ["s1:26379", "s2"], "password": "pw"}'
    s = load(tmp_path, {"TASKEXEC_REDIS__SENTINEL": sentinel})
    assert not s.embedded
    assert s.redis.sentinel["nodes"] == ("s1:26379", "s2:6379")
    shown = s.to_dict()
    assert shown["redis"]["sentinel"] == {
        "master": "m",
        "nodes": ["s1:26379", "s2:6379"],
        "password": "******",
    }
    assert type(shown["handlers"]) is dict and type(shown["queue"]["names"]) is list


# Errors that name the file and the key


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = write(tmp_path, "queue:\n  blok_s: 2\n")
    assert error_of(tmp_path).startswith(f"{path}: queue.blok_s: unknown key")


def test_unknown_key_in_the_local_file_names_that_file(tmp_path):
    write(tmp_path, "queue: {block_s: 2}\n")
    path = write(tmp_path, "executor: {thread: 2}\n", "local.service_conf.yaml")
    assert error_of(tmp_path).startswith(f"{path}: executor.thread: unknown key")


def test_unknown_key_under_redis_is_an_error(tmp_path):
    path = write(tmp_path, "redis: {host: 'h:1', port: 6379}\n")
    assert error_of(tmp_path).startswith(f"{path}: redis.port: unknown key")


def test_unknown_section_is_an_error(tmp_path):
    path = write(tmp_path, "kafka: {brokers: x}\n")
    assert error_of(tmp_path).startswith(f"{path}: kafka: unknown key")


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("queue: {block_s: '5'}", "queue.block_s"),
        ("executor: {procs: true}", "executor.procs"),
        ("executor: {threads: 2.5}", "executor.threads"),
        ("memory: {trace_on_start: 1}", "memory.trace_on_start"),
        ("queue: {names: common}", "queue.names"),
        ("queue: {priorities: [1, '0']}", "queue.priorities"),
        ("redis: {password: 1234}", "redis.password"),
        ("redis: {embedded: 3}", "redis.embedded"),
        ("logging: {dir: []}", "logging.dir"),
        ("queue: {block_s: null}", "queue.block_s"),
    ],
)
def test_wrong_types_name_the_file_and_the_key(tmp_path, yaml_text, key):
    path = write(tmp_path, yaml_text + "\n")
    assert error_of(tmp_path).startswith(f"{path}: {key}: ")


def test_yaml_int_for_a_float_is_fine(tmp_path):
    write(tmp_path, "queue: {block_s: 2}\nheartbeat: {interval_s: 0.5, timeout_s: 2}\n")
    s = load(tmp_path)
    assert s.queue.block_s == 2.0 and isinstance(s.queue.block_s, float)
    assert (s.heartbeat.interval_s, s.heartbeat.timeout_s) == (0.5, 2.0)


def test_s22_block_s_zero_is_refused_naming_the_key(tmp_path):
    path = write(tmp_path, "queue: {block_s: 0}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{path}: queue.block_s: ")
    assert "endless" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("executor.procs", 0),
        ("executor.threads", 0),
        ("heartbeat.interval_s", 0),
        ("cleanup.interval_s", -1),
        ("queue.max_attempts", 0),
        ("executor.max_tasks_per_worker", -1),
    ],
)
def test_out_of_range_values_are_refused(tmp_path, key, value):
    assert error_of(tmp_path, **{key: value}).startswith(f"command line: {key}: must be ")


def test_s27_socket_timeout_shorter_than_the_blocking_read_is_refused(tmp_path):
    path = write(tmp_path, "redis: {socket_timeout_s: 3}\nqueue: {block_s: 5}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{path}: ")
    assert "redis.socket_timeout_s" in message and "queue.block_s" in message


def test_s27_socket_timeout_names_every_source_involved(tmp_path):
    path = write(tmp_path, "redis: {socket_timeout_s: 3}\n")
    message = error_of(tmp_path, {"TASKEXEC_QUEUE__BLOCK_S": "5"})
    assert message.startswith(f"{path}, TASKEXEC_QUEUE__BLOCK_S: redis.socket_timeout_s: ")


@pytest.mark.parametrize("socket_timeout", ["socket_timeout_s: 10", ""])
def test_s27_configurations_that_fit_are_accepted(tmp_path, socket_timeout):
    write(tmp_path, f"redis: {{{socket_timeout}}}\nqueue: {{block_s: 5}}\n")
    s = load(tmp_path)
    assert (s.redis.socket_timeout_s, s.queue.block_s) == (10.0, 5.0)


def test_s33_max_connections_one_is_refused(tmp_path):
    path = write(tmp_path, "redis: {max_connections: 1}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{path}: redis.max_connections: ")
    assert "blocking read" in message


def test_s33_max_connections_default_and_explicit(tmp_path):
    assert load(tmp_path, **{"executor.threads": 12}).redis.max_connections == 16
    write(tmp_path, "redis: {max_connections: 4}\n")
    assert load(tmp_path, **{"executor.threads": 12}).redis.max_connections == 4


def test_heartbeat_timeout_must_exceed_the_interval(tmp_path):
    path = write(tmp_path, "heartbeat: {interval_s: 10, timeout_s: 10}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{path}: heartbeat.timeout_s: ")
    assert "heartbeat.interval_s" in message


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "queue:\n  block_s: 1\n  names: [a\n")
    assert re.match(rf"{re.escape(str(path))}: line \d+: not valid YAML", error_of(tmp_path))


def test_yaml_that_is_not_a_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert error_of(tmp_path).startswith(f"{path}: expected a mapping")


def test_empty_file_and_empty_section_are_fine(tmp_path):
    write(tmp_path, "")
    write(tmp_path, "redis:\n", "local.service_conf.yaml")
    assert load(tmp_path).embedded


# RAGFlow compatibility

RAGFLOW_CONF = """\
ragflow: {host: 0.0.0.0, http_port: 9380}
mysql: {name: rag_flow, user: root, password: infini_rag_flow, host: mysql, port: 3306}
postgres: {name: rag_flow}
minio: {user: rag_flow, password: infini_rag_flow, host: 'minio:9000'}
es: {hosts: 'http://es01:9200'}
os: {hosts: 'http://opensearch01:9201'}
infinity: {uri: 'infinity:23817', db_name: default_db}
s3: {region: us-central1}
oss: {bucket: b}
azure: {auth_type: sas}
opendal: {scheme: fs}
user_default_llm: {factory: Tongyi-Qianwen, api_key: sk-x}
oauth: {github: {client_id: x}}
authentication: {client: {switch: false}}
permission: {switch: false}
smtp: {mail_server: x}
redis:
  db: 1
  password: 'infini_rag_flow'
  host: 'redis:6380'
"""


def test_ragflow_sections_are_accepted_and_ignored(tmp_path, caplog):
    write(tmp_path, RAGFLOW_CONF)
    with caplog.at_level(logging.DEBUG, logger="workers.config"):
        s = load(tmp_path)
    assert "ragflow" not in s.to_dict() and "mysql" not in s.to_dict()
    ignored = [r for r in caplog.records if "Ignoring RAGFlow sections" in r.getMessage()]
    assert len(ignored) == 1 and ignored[0].levelno == logging.DEBUG


def test_ragflow_redis_section_is_read(tmp_path):
    write(tmp_path, "redis: {host: 'h:6380', db: 1, password: x}\n")
    s = load(tmp_path)
    assert (s.redis.host, s.redis.db, s.redis.password) == ("h:6380", 1, "x")
    assert s.redis.address == ("h", 6380)
    assert not s.embedded


def test_ragflow_environment_aliases(tmp_path):
    env = {"MAX_CONCURRENT_TASKS": "3", "WORKER_HEARTBEAT_TIMEOUT": "45"}
    s = load(tmp_path, env)
    assert (s.executor.threads, s.heartbeat.timeout_s) == (3, 45.0)
    assert error_of(tmp_path, {"MAX_CONCURRENT_TASKS": "lots"}).startswith(
        "MAX_CONCURRENT_TASKS: executor.threads: "
    )


# Environment variables


def test_nested_environment_variable(tmp_path):
    s = load(tmp_path, {"TASKEXEC_REDIS__EMBEDDED__DIR": "/var/lib/te"})
    assert s.redis.embedded.dir == "/var/lib/te"


def test_unknown_taskexec_variable_is_an_error_naming_it(tmp_path):
    message = error_of(tmp_path, {"TASKEXEC_QUEUE__BLOK_S": "2"})
    assert message.startswith("TASKEXEC_QUEUE__BLOK_S: queue.blok_s: unknown key")
    assert error_of(tmp_path, {"TASKEXEC_REDIS__EMBEDDED": "x"}).startswith(
        "TASKEXEC_REDIS__EMBEDDED: redis.embedded: "
    )


def test_taskexec_variables_without_double_underscore_are_ignored(tmp_path):
    env = {"TASKEXEC_TEST_MARK": "x", "TASKEXEC_CONF_DIR": str(tmp_path), "OTHER__X": "1"}
    assert load(tmp_path, env).to_dict() == load(tmp_path).to_dict()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("TASKEXEC_EXECUTOR__THREADS", "5.0"),
        ("TASKEXEC_EXECUTOR__THREADS", "five"),
        ("TASKEXEC_EXECUTOR__THREADS", "1_000"),
        ("TASKEXEC_QUEUE__BLOCK_S", "1s"),
        ("TASKEXEC_QUEUE__BLOCK_S", "nan"),
        ("TASKEXEC_QUEUE__PRIORITIES", "1,high"),
        ("TASKEXEC_QUEUE__NAMES", "[common"),
        ("TASKEXEC_REDIS__SENTINEL", '["m"]'),
    ],
)
def test_numbers_and_structures_are_parsed_strictly(tmp_path, name, text):
    assert error_of(tmp_path, {name: text}).startswith(f"{name}: ")


def test_environment_numbers_and_lists(tmp_path):
    env = {
        "TASKEXEC_QUEUE__BLOCK_S": "2.5",
        "TASKEXEC_REDIS__DB": "3",
        "TASKEXEC_QUEUE__NAMES": "a, b.c ,",
        "TASKEXEC_QUEUE__PRIORITIES": "[0, 2, 1]",
        "TASKEXEC_HANDLERS__RESIZE": "images.jobs:resize",
    }
    s = load(tmp_path, env)
    assert (s.queue.block_s, s.redis.db) == (2.5, 3)
    assert s.queue.names == ("a", "b.c")
    assert s.queue.priorities == (2, 1, 0)
    assert s.handlers["resize"] == "images.jobs:resize"
    assert load(tmp_path, {"TASKEXEC_QUEUE__NAMES": '["x", "y"]'}).queue.names == ("x", "y")
    assert load(tmp_path, {"TASKEXEC_QUEUE__PRIORITIES": "3,1"}).queue.priorities == (3, 1)


# Overrides


def test_overrides_skip_flags_not_given(tmp_path):
    write(tmp_path, "queue: {names: [a]}\nexecutor: {procs: 2}\n")
    s = load_settings(tmp_path, {"executor.procs": None, "queue.names": ()}, {})
    assert (s.executor.procs, s.queue.names) == (2, ("a",))


def test_overrides_win_and_take_lists(tmp_path):
    s = load_settings(tmp_path, {"executor.procs": 2, "queue.names": ["a", "b", "a"]}, {})
    assert (s.executor.procs, s.queue.names) == (2, ("a", "b"))
    assert load(tmp_path, **{"logging.level": "debug"}).logging.level == "DEBUG"
    assert load(tmp_path, **{"executor.threads": "7"}).executor.threads == 7


def test_override_of_an_unknown_key_is_an_error(tmp_path):
    assert error_of(tmp_path, **{"executor.prox": 2}).startswith(
        "command line: executor.prox: unknown key (did you mean executor.procs?)"
    )


# Single-key checks


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("redis.url", "http://r:6379"),
        ("redis.url", "unix://"),
        ("redis.host", "h:port"),
        ("redis.host", "h:70000"),
        ("redis.host", "a b"),
        ("logging.level", "verbose"),
        ("logging.format", "xml"),
        ("queue.priorities", [1, 1]),
        ("queue.priorities", [-1]),
        ("queue.names", ["a b"]),
        ("keys.queue_stream", "te.{queue}"),
        ("keys.task", "te:task:{id}:{extra}"),
        ("keys.cancel", "{id"),
        ("keys.registry", "{x}"),
        ("handlers.resize", "resize"),
        ("handlers.resize", "images.jobs:"),
        ("handlers.bad name", "a:b"),
        ("redis.sentinel", {"master": "m"}),
        ("redis.sentinel", {"master": "m", "nodes": ["s:1"], "extra": 1}),
        ("memory.snapshot_dir", ""),
    ],
)
def test_single_key_checks(tmp_path, key, value):
    assert error_of(tmp_path, **{key: value}).startswith(f"command line: {key}: ")


def test_empty_lists_are_refused(tmp_path):
    path = write(tmp_path, "queue: {names: [], priorities: [1]}\n")
    assert error_of(tmp_path).startswith(f"{path}: queue.names: ")
    path = write(tmp_path, "queue: {priorities: []}\n")
    assert error_of(tmp_path).startswith(f"{path}: queue.priorities: ")


def test_url_and_host_together_are_an_error(tmp_path):
    path = write(tmp_path, "redis: {url: 'redis://a:6379', host: 'b:6379'}\n")
    message = error_of(tmp_path)
    assert message.startswith(f"{path}: redis.url: ") and "redis.host" in message


@pytest.mark.parametrize(
    ("url"), ["redis://a:6379/0", "rediss://u:p@a:6380", "unix:///run/redis.sock?db=2"]
)
def test_accepted_urls(tmp_path, url):
    s = load(tmp_path, **{"redis.url": url})
    assert s.redis.url == url and not s.embedded


def test_host_port_is_optional_and_normalised(tmp_path):
    assert load(tmp_path, **{"redis.host": "redis"}).redis.host == "redis:6379"
    s = load(tmp_path, **{"redis.host": "[::1]:6390"})
    assert (s.redis.host, s.redis.address) == ("[::1]:6390", ("::1", 6390))


def test_empty_url_and_host_mean_embedded(tmp_path):
    write(tmp_path, "redis: {url: '', host: ''}\n")
    s = load(tmp_path)
    assert s.embedded and s.redis.url is None and s.redis.host is None


def test_handlers_add_to_and_override_the_builtins(tmp_path):
    write(tmp_path, "handlers:\n  chunk: mypkg.chunker:run\n  resize: images.jobs:resize\n")
    handlers = load(tmp_path).handlers
    assert handlers["chunk"] == "mypkg.chunker:run"
    assert handlers["resize"] == "images.jobs:resize"
    assert handlers["noop"] == "workers.handlers.builtin:noop"


def test_custom_key_templates(tmp_path):
    write(tmp_path, "keys: {queue_stream: 'x:{queue}:{priority}', registry: XREG}\n")
    keys = load(tmp_path).keys
    assert (keys.queue_stream, keys.registry, keys.task) == (
        "x:{queue}:{priority}",
        "XREG",
        "te:task:{id}",
    )


def test_settings_are_frozen(tmp_path):
    s = load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.executor.threads = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.handlers["x"] = "a:b"  # type: ignore[index]


def test_settings_pickle_and_hash(tmp_path):
    write(tmp_path, "redis: {sentinel: {master: m, nodes: ['s:1']}}\n")
    s = load(tmp_path)
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(s) == hash(load(tmp_path))
