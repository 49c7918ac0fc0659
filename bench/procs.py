"""Servers under test as real processes: start, time to first 200, RSS from /proc, stop."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_database(data_dir: Path, copy_dir: Path) -> None:
    """A consistent copy of the database (SQLite's online backup), while its daemon may run."""
    shutil.rmtree(copy_dir, ignore_errors=True)
    copy_dir.mkdir(parents=True)
    source, target = sqlite3.connect(data_dir / "scim.db"), sqlite3.connect(copy_dir / "scim.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def get_status(port: int, path: str, token: str | None = None, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


class Server:
    """One server process on 127.0.0.1:port; `startup` is seconds from exec to the first 200."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 health: str = "/health", token: str | None = None, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.health = health
        self.token = token
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup: float | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        self._log = open(self.log_path, "ab")
        began = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, *self.args], env=self.env, cwd=ROOT,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = began + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early: {self.log_path.read_text()[-2000:]}")
            if get_status(self.port, self.health, self.token, timeout=1.0) == 200:
                self.startup = time.perf_counter() - began
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer 200 on {self.health} within {timeout:.0f} s")

    def rss_kb(self) -> int:
        """Resident set size (VmRSS) of the process, in KiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log:
            self._log.close()
            self._log = None


class PeakRss:
    """Samples a server's RSS every 0.2 s while load runs; `peak` is the highest seen."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.server.rss_kb())
            except (OSError, AssertionError):
                return
            self._stop.wait(0.2)


def scimd(data_dir: Path, log_dir: Path, token: str, threads: int, name: str = "scimd",
          looking_glass: bool = True) -> Server:
    port = free_port()
    env = {"SHOWCASE_LISTEN_ADDR": f"127.0.0.1:{port}", "SHOWCASE_BASE_URL": f"http://127.0.0.1:{port}",
           "SCIM_DATA_DIR": str(data_dir), "SCIM_API_TOKEN": token, "SCIM_THREADS": str(threads),
           "SCIM_LOOKING_GLASS": "true" if looking_glass else "false"}
    return Server(name, ["-m", "scimd", "serve"], log_dir, env=env, port=port)


def ceiling(log_dir: Path, threads: int) -> Server:
    port = free_port()
    return Server("ceiling", ["-m", "bench.ceiling", "--port", str(port), "--threads", str(threads)], log_dir,
                  port=port)


def peer(log_dir: Path, threads: int, users: int, token: str) -> Server:
    port = free_port()
    return Server("peer", ["-m", "bench.peer", "--port", str(port), "--threads", str(threads), "--users", str(users),
                           "--token", token], log_dir, health="/v2/ServiceProviderConfig", token=token, port=port)
