"""Worker settings: each field declared once, and the CLI flags, the variables and the docs agree with it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from kubeworkers import cli, settings
from kubeworkers.settings import WorkerSettings, settings_from

DOCS = Path(__file__).resolve().parents[2] / "docs" / "handlers.md"


def test_settings_come_from_the_environment_and_flags_override_them() -> None:
    env = {
        "KUBEWORKERS_REDIS_URL": "redis://r:6379/1", "KUBEWORKERS_POOL": "p", "KUBEWORKERS_IMPORT": "a.b, c",
        "KUBEWORKERS_CONCURRENCY": "7", "KUBEWORKERS_SHUTDOWN_GRACE": "12.5", "KUBEWORKERS_METRICS_PORT": "0",
        "POD_NAME": "pod-1",
    }
    s = settings_from(env, concurrency=3, namespace=None)
    assert (s.redis_url, s.pool, s.imports, s.concurrency) == ("redis://r:6379/1", "p", ["a.b", "c"], 3)
    assert (s.shutdown_grace, s.metrics_port, s.worker_name, s.namespace) == (12.5, 0, "pod-1", "default")


def test_heartbeat_defaults_to_a_sixth_of_a_short_lease() -> None:
    assert WorkerSettings(pool="p", lease_seconds=6).heartbeat_seconds == 1.0
    assert WorkerSettings(pool="p").heartbeat_seconds == 5.0


def test_a_heartbeat_slower_than_half_the_lease_is_refused() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        WorkerSettings(pool="p", lease_seconds=2, heartbeat_seconds=1.5).validate()
    with pytest.raises(ValueError, match="pool"):
        WorkerSettings().validate()


def worker_flags() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: action for action in sub.choices["worker"]._actions for opt in action.option_strings}


def test_every_setting_is_a_worker_flag_and_every_worker_flag_a_setting() -> None:
    flags = worker_flags()
    declared = settings.declared()
    assert {s.flag for s in declared.values()} == set(flags) - {"-h", "--help"}
    for name, s in declared.items():
        assert flags[s.flag].dest == name
        assert s.env in (flags[s.flag].help or "")


def test_flags_override_the_environment_for_every_setting() -> None:
    argv = ["worker", "--pool", "flagpool", "--import", "a,b", "--import", "c", "--block-ms", "50",
            "--result-ttl", "60", "--max-backoff", "9", "--promote-seconds", "0.5", "--metrics-host", "127.0.0.1",
            "--name", "pod-x", "--log-format", "text"]
    args = cli.build_parser().parse_args(argv)
    s = settings_from({"KUBEWORKERS_POOL": "envpool", "KUBEWORKERS_BLOCK_MS": "7"}, **settings.flag_values(args))
    assert (s.pool, s.imports, s.block_ms, s.result_ttl, s.max_backoff) == ("flagpool", ["a", "b", "c"], 50, 60, 9.0)
    assert (s.promote_seconds, s.metrics_host, s.worker_name, s.log_format) == (0.5, "127.0.0.1", "pod-x", "text")


def test_every_variable_is_read_for_its_setting() -> None:
    values = {"imports": "m1,m2", "concurrency": "3", "lease_seconds": "12", "log_level": "DEBUG"}
    env = {settings.ENV[name]: raw for name, raw in values.items()}
    s = settings_from(env, pool="p")
    assert (s.imports, s.concurrency, s.lease_seconds, s.log_level) == (["m1", "m2"], 3, 12.0, "DEBUG")


def documented_rows() -> list[tuple[str, str, str]]:
    text = DOCS.read_text()
    table = text[text.index("| flag | environment | default |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        flag, env, default = (re.sub(r"[`\\]", "", cell).strip() for cell in line.strip("|").split("|")[:3])
        rows.append((flag, env, default))
    return rows


def test_the_docs_table_lists_every_setting_with_its_flag_variable_and_default() -> None:
    expected = [(s.flag, s.env, settings.default_text(name)) for name, s in settings.declared().items()]
    assert documented_rows() == expected
