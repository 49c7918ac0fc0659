"""Shared fixtures: an app on a fresh data directory, driven in-process through Werkzeug's test
Client (`client`), and a real daemon process on a free loopback port (`daemon`)."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from werkzeug.test import Client, TestResponse

from scimd.app import create_app
from scimd.config import load
from scimd.store import Store

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def pytest_report_header() -> str:
    return f"sqlite {sqlite3.sqlite_version}"


class ServerClient(Client):
    """werkzeug's test Client, closing each response once it has read it, as a WSGI server does
    once it has sent one (PEP 3333): the Looking Glass records an exchange then."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


class ScimClient(ServerClient):
    """A test client that sends the token and SCIM JSON by default."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        if kwargs.pop("auth", True):
            headers.setdefault("Authorization", AUTH["Authorization"])
        if "json" in kwargs:
            kwargs["data"] = orjson.dumps(kwargs.pop("json"))
            kwargs.setdefault("content_type", "application/scim+json")
        return super().open(*args, headers=headers, **kwargs)


def make_app(data_dir: Path, **env: str) -> Any:
    config = load({"SCIM_DATA_DIR": str(data_dir), "SCIM_API_TOKEN": TOKEN, "SCIM_LOOKING_GLASS": "false", **env})
    store = Store(config.database_path)
    return create_app(config, store), store


@pytest.fixture
def app_and_store(tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    app, store = make_app(tmp_path)
    yield app, store
    store.close()


@pytest.fixture
def client(app_and_store: tuple[Any, Store]) -> ScimClient:
    return ScimClient(app_and_store[0])


def assert_scim_error(response: TestResponse, status: int, scim_type: str | None = None) -> dict[str, Any]:
    """Every error is a SCIM Error body with a string status (RFC 7644 §3.12)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/scim+json"
    body = orjson.loads(response.get_data())
    assert body["schemas"] == [ERROR_URN]
    assert body["status"] == str(status)
    assert body.get("detail")
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


def patch_body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_URN], "Operations": list(operations)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _measured() -> bool:
    """True when this test run is under coverage: then the daemons it starts are measured too."""
    coverage = sys.modules.get("coverage")
    return bool(coverage and coverage.Coverage.current())


class Daemon:
    """The real scimd process, started with `python -m scimd serve` on 127.0.0.1."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SHOWCASE_LISTEN_ADDR": f"127.0.0.1:{self.port}", "SCIM_DATA_DIR": str(data_dir),
                    "SCIM_API_TOKEN": TOKEN, "SHOWCASE_BASE_URL": self.base, "PYTHONPATH": str(ROOT),
                    "SCIM_LOG_LEVEL": "warning", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Daemon:
        cov = ["-m", "coverage", "run", "--rcfile", str(ROOT / "pyproject.toml")] if _measured() else []
        self.process = subprocess.Popen([sys.executable, *cov, "-m", "scimd", "serve"], env=self.env,
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scimd exited early: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("scimd did not become healthy in time")

    def stop(self, sig: int | None = None) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()
        return code

    def request(self, method: str, path: str, body: Any = None, token: str | None = TOKEN,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        data = orjson.dumps(body) if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/scim+json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, dict(response.headers), orjson.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, dict(exc.headers), orjson.loads(raw) if raw else None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    process = Daemon(tmp_path / "data").start()
    yield process
    process.stop()
