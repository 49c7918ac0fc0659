"""Configuration from the environment (scimd/config.py), validated once at start: every variable
parsed from a table, a bad value named in one line with the variable and the value, tokens
never shown, and `scimd check-config` exiting 2 on a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from scimd.config import Config, ConfigError, load
from tests.conftest import ROOT

VALID: list[tuple[str, str, str, Any]] = [
    ("SHOWCASE_LISTEN_ADDR", ":9000", "port", 9000),
    ("SHOWCASE_LISTEN_ADDR", "127.0.0.1:8081", "host", "127.0.0.1"),
    ("SHOWCASE_LISTEN_ADDR", "[::1]:8443", "host", "::1"),
    ("SHOWCASE_LISTEN_ADDR", " 0.0.0.0:80 ", "port", 80),
    ("SHOWCASE_BASE_URL", "https://scim.example.com/", "base_url", "https://scim.example.com"),
    ("SHOWCASE_BASE_URL", "http://10.0.0.5:8080/tenant", "base_url", "http://10.0.0.5:8080/tenant"),
    ("SHOWCASE_CORS_ORIGINS", " https://a.example , https://b.example/ ,", "cors_origins",
     ("https://a.example", "https://b.example")),
    ("SHOWCASE_CORS_ORIGINS", ",", "cors_origins", ()),
    ("SCIM_DATA_DIR", "/var/lib/scimd", "data_dir", Path("/var/lib/scimd")),
    ("SCIM_LOOKING_GLASS", "no", "looking_glass", False),
    ("SCIM_LOOKING_GLASS", "TRUE", "looking_glass", True),
    ("SCIM_LOOKING_GLASS", "0", "looking_glass", False),
    ("SCIM_THREADS", "16", "threads", 16),
    ("SCIM_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
    ("SCIM_LOG_LEVEL", "DEBUG", "log_level", "debug"),
    ("SCIM_RATE_LIMIT", "2.5", "rate_limit", 2.5),
    ("SCIM_CONNECTION_LIMIT", "50", "connection_limit", 50),
    ("SCIM_CHANNEL_TIMEOUT", "60", "channel_timeout", 60),
    ("SCIM_MAX_RESULTS", "50", "max_results", 50),
    ("SCIM_BULK_MAX_OPERATIONS", "10", "bulk_max_operations", 10),
    ("SCIM_BULK_MAX_PAYLOAD", "4096", "bulk_max_payload", 4096),
    ("SCIM_API_TOKEN", "  s3cret-token  ", "api_tokens", ("s3cret-token",)),
    ("SCIM_THREADS", "", "threads", 16),
    ("SCIM_LOG_LEVEL", "   ", "log_level", "info"),
]


@pytest.mark.parametrize(("name", "value", "attribute", "expected"), VALID,
                         ids=[f"{n}={v!r}" for n, v, _, _ in VALID])
def test_valid_value(name: str, value: str, attribute: str, expected: Any) -> None:
    assert getattr(load({name: value}), attribute) == expected


def test_defaults_without_any_variable() -> None:
    config = load({})
    assert config == Config()
    assert (config.host, config.port, config.base_url) == ("", 8080, "http://localhost:8080")
    assert config.database_path == Path("./data/scim.db")
    assert not config.auth_enabled


INVALID: list[tuple[str, str]] = [
    ("SHOWCASE_LISTEN_ADDR", "8080"),
    ("SHOWCASE_LISTEN_ADDR", "host:"),
    ("SHOWCASE_LISTEN_ADDR", ":0"),
    ("SHOWCASE_LISTEN_ADDR", ":70000"),
    ("SHOWCASE_LISTEN_ADDR", "[::1]"),
    ("SHOWCASE_LISTEN_ADDR", ""),
    ("SHOWCASE_BASE_URL", "localhost:8080"),
    ("SHOWCASE_BASE_URL", "ftp://scim.example.com"),
    ("SHOWCASE_BASE_URL", "https://"),
    ("SCIM_LOOKING_GLASS", "maybe"),
    ("SCIM_THREADS", "0"),
    ("SCIM_THREADS", "257"),
    ("SCIM_THREADS", "eight"),
    ("SCIM_THREADS", "1.5"),
    ("SCIM_MAX_BODY_BYTES", "10"),
    ("SCIM_LOG_LEVEL", "loud"),
    ("SCIM_RATE_LIMIT", "-1"),
    ("SCIM_RATE_LIMIT", "fast"),
    ("SCIM_RATE_LIMIT", "nan"),
    ("SCIM_CONNECTION_LIMIT", "0"),
    ("SCIM_CHANNEL_TIMEOUT", "0"),
    ("SCIM_MAX_RESULTS", "0"),
    ("SCIM_BULK_MAX_OPERATIONS", "-5"),
    ("SCIM_BULK_MAX_PAYLOAD", "1"),
    ("SCIM_LOOKING_GLASS_MAX_EVENTS", "0"),
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v!r}" for n, v in INVALID])
def test_invalid_value_is_one_line_naming_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load({name: value, "SCIM_THREADS": "4"} if name != "SCIM_THREADS" else {name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r}: ")
    assert "\n" not in message and len(message) > len(f"{name}={value!r}: ")


def test_first_bad_value_wins_and_names_only_its_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        load({"SCIM_THREADS": "many", "SCIM_BULK_MAX_PAYLOAD": "1"})
    assert str(raised.value).startswith("SCIM_THREADS='many'")
    assert "SCIM_BULK_MAX_PAYLOAD" not in str(raised.value)


# -- tokens --------------------------------------------------------------------------------------


def test_token_file_holds_several_tokens(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotated 2024-03-01\nold-token-1\n\n  new-token-2  \n#disabled-token\n")
    config = load({"SCIM_API_TOKEN_FILE": str(token_file), "SCIM_API_TOKEN": "env-token"})
    assert config.file_tokens == ("old-token-1", "new-token-2")
    assert config.api_tokens == ("env-token",)
    assert config.token_file == token_file and config.auth_enabled


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read"),
    ("", "holds no token"),
    ("# only a comment\n\n", "holds no token"),
    (b"\xff\xfe not utf-8", "cannot read"),
], ids=["missing", "empty", "comments-only", "not-utf8"])
def test_unusable_token_file_names_the_variable_and_the_path(tmp_path: Path, content: str | bytes | None,
                                                             problem: str) -> None:
    token_file = tmp_path / "tokens"
    if isinstance(content, bytes):
        token_file.write_bytes(content)
    elif content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load({"SCIM_API_TOKEN_FILE": str(token_file)})
    message = str(raised.value)
    assert message.startswith(f"SCIM_API_TOKEN_FILE={token_file}: ") and problem in message
    assert "\n" not in message


def test_tokens_are_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("file-secret-token\n")
    config = load({"SCIM_API_TOKEN": "env-secret-token", "SCIM_API_TOKEN_FILE": str(token_file)})
    shown = repr(config) + orjson.dumps(config.masked()).decode()
    assert "secret-token" not in shown
    assert config.masked()["api_tokens"] == ["***(16 chars)"]


def test_no_token_means_auth_disabled() -> None:
    assert not load({"SCIM_API_TOKEN": "   "}).auth_enabled
    assert load({"SCIM_API_TOKEN": "t"}).auth_enabled


# -- the command line ----------------------------------------------------------------------------


def run_scimd(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "SHOWCASE_"))}
    return subprocess.run([sys.executable, "-m", "scimd", *args], env={**clean, "PYTHONPATH": str(ROOT), **env},
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_check_config_prints_the_effective_configuration_masked(tmp_path: Path) -> None:
    result = run_scimd("check-config", SCIM_API_TOKEN="cli-secret-token", SCIM_THREADS="3",
                       SCIM_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    shown = orjson.loads(result.stdout)
    assert shown["threads"] == 3 and shown["data_dir"] == str(tmp_path)
    assert "cli-secret-token" not in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "value"), [("SCIM_THREADS", "zero"), ("SHOWCASE_BASE_URL", "not a url")])
def test_check_config_exits_2_with_one_line(name: str, value: str) -> None:
    result = run_scimd("check-config", **{name: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{name}={value!r}" in lines[0]
    assert result.stdout == ""
