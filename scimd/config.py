"""Configuration from the environment, validated once at start.

The variable names are those of the container scimd replaces (protocolsoup-scim); a bad value
raises ConfigError naming the variable and the value, and the daemon exits non-zero.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Config:
    host: str = ""
    port: int = 8080
    base_url: str = "http://localhost:8080"
    cors_origins: tuple[str, ...] = ("http://localhost:3000", "http://localhost:5173")
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    file_tokens: tuple[str, ...] = field(default=(), repr=False)
    token_file: Path | None = None
    data_dir: Path = Path("./data")
    looking_glass: bool = True
    looking_glass_max_events: int = 500
    # 16, not 8: concurrent writes share one COMMIT (store.write's group commit), and a group can be
    # no larger than the threads; 16 served POST 14.8% +- 4.1% faster than 8, GET no differently
    # (docs/benchmarks.md, "Session 6").
    threads: int = 16
    max_body_bytes: int = 1_048_576
    log_level: str = "info"
    rate_limit: float = 0.0
    connection_limit: int = 1000
    channel_timeout: int = 30
    max_results: int = 1000
    bulk_max_operations: int = 1000
    bulk_max_payload: int = 1_048_576

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_tokens) or self.token_file is not None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "scim.db"

    def masked(self) -> dict[str, object]:
        """The effective configuration for display, secrets masked."""
        shown: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("api_tokens", "file_tokens"):
                value = [f"***({len(t)} chars)" for t in value]
            elif isinstance(value, (Path, tuple)):
                value = str(value) if isinstance(value, Path) else list(value)
            shown[f.name] = value
        return shown


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_listen_addr(text: str) -> tuple[str, int]:
    """`host:port`, `:port` or `[v6]:port` -> (host, port); an empty host means all interfaces."""
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", text.strip())
    if not match:
        raise ValueError("expected host:port, :port or [v6]:port")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    return match["v6"] or match["host"] or "", port


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


def parse_base_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an absolute http(s) URL")
    return text.strip().rstrip("/")


def parse_origins(text: str) -> tuple[str, ...]:
    return tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return value
    return parse


def _rate(text: str) -> float:
    value = float(text.strip())
    if not 0 <= value <= 1_000_000:
        raise ValueError("expected requests per second, 0 for off")
    return value


def _log_level(text: str) -> str:
    if text.strip().lower() not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
    return text.strip().lower()


def read_token_file(path: Path) -> tuple[str, ...]:
    """One token per line; blank lines and `#` comments ignored (systemd credentials, secret mounts)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"SCIM_API_TOKEN_FILE={path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    tokens = tuple(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
    if not tokens:
        raise ConfigError(f"SCIM_API_TOKEN_FILE={path}: holds no token")
    return tokens


# variable -> (Config field, parser). One table drives loading, validation and the docs.
_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "SHOWCASE_BASE_URL": ("base_url", parse_base_url),
    "SHOWCASE_CORS_ORIGINS": ("cors_origins", parse_origins),
    "SCIM_DATA_DIR": ("data_dir", lambda text: Path(text.strip())),
    "SCIM_LOOKING_GLASS": ("looking_glass", parse_bool),
    "SCIM_LOOKING_GLASS_MAX_EVENTS": ("looking_glass_max_events", _bounded_int(1, 100_000)),
    "SCIM_THREADS": ("threads", _bounded_int(1, 256)),
    "SCIM_MAX_BODY_BYTES": ("max_body_bytes", _bounded_int(1024, 1 << 30)),
    "SCIM_LOG_LEVEL": ("log_level", _log_level),
    "SCIM_RATE_LIMIT": ("rate_limit", _rate),
    "SCIM_CONNECTION_LIMIT": ("connection_limit", _bounded_int(1, 100_000)),
    "SCIM_CHANNEL_TIMEOUT": ("channel_timeout", _bounded_int(1, 3600)),
    "SCIM_MAX_RESULTS": ("max_results", _bounded_int(1, 100_000)),
    "SCIM_BULK_MAX_OPERATIONS": ("bulk_max_operations", _bounded_int(1, 100_000)),
    "SCIM_BULK_MAX_PAYLOAD": ("bulk_max_payload", _bounded_int(1024, 1 << 30)),
}


def load(env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from the environment, raising ConfigError on the first bad value."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    if "SHOWCASE_LISTEN_ADDR" in env:
        values["host"], values["port"] = _parse("SHOWCASE_LISTEN_ADDR", env["SHOWCASE_LISTEN_ADDR"], parse_listen_addr)
    for name, (attr, parser) in _VARIABLES.items():
        if name in env and env[name].strip() != "":
            values[attr] = _parse(name, env[name], parser)
    token = env.get("SCIM_API_TOKEN", "").strip()
    values["api_tokens"] = (token,) if token else ()
    if env.get("SCIM_API_TOKEN_FILE", "").strip():
        token_file = Path(env["SCIM_API_TOKEN_FILE"].strip())
        values["file_tokens"] = read_token_file(token_file)
        values["token_file"] = token_file
    return Config(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, parser: Callable[[str], object]) -> object:
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc
