"""One real scimd process for the whole interoperability suite: the scenarios replay what
identity providers send against the daemon as it is deployed, not an in-process app."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.conftest import TOKEN, Daemon
from tests.interop.runner import Server


@pytest.fixture(scope="session")
def interop_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("interop") / "data").start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def interop_server(interop_daemon: Daemon) -> Server:
    return Server(interop_daemon.base, TOKEN)
