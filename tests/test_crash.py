"""Crash consistency: nothing acknowledged is ever lost, nothing unacknowledged is half-applied.

Writer threads drive the real daemon (creates, multi-attribute PATCHes, membership adds and
removes, deletes), each on its own users and its own group, one request at a time, keeping a
model of every change acknowledged with a 2xx. The daemon is killed with SIGKILL at a random
moment; the database file must pass `PRAGMA integrity_check` and `foreign_key_check` before the
restart, and after it each writer's users and group must equal its acknowledged model, or that
model plus the one request it had in flight (whose outcome is unknown) applied whole.
"""

from __future__ import annotations

import http.client
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from scimd.schema import fold_case
from tests.conftest import AUTH, PATCH_URN, Daemon

WRITERS = 4
KILLS = 12
MAX_OPERATIONS = 5_000  # per writer: bounds the loop even if the kill never came
FIELDS = ("title", "nickName", "displayName", "name.givenName", 'emails[type eq "work"].value')


@dataclass(frozen=True)
class Model:
    """What a writer's part of the directory must hold: userName -> token, and its group's members."""

    users: dict[str, str] = field(default_factory=dict)
    members: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Op:
    kind: str  # create, patch, add, remove, delete
    name: str
    token: str = ""


def apply(model: Model, op: Op) -> Model:
    users = dict(model.users)
    match op.kind:
        case "create" | "patch":
            users[op.name] = op.token
            return replace(model, users=users)
        case "add":
            return replace(model, members=model.members | {op.name})
        case "remove":
            return replace(model, members=model.members - {op.name})
        case "delete":
            del users[op.name]
            return Model(users, model.members - {op.name})
    raise AssertionError(op)


def fields_of(token: str) -> dict[str, Any]:
    return {"title": token, "nickName": token, "displayName": token, "name": {"givenName": token},
            "emails": [{"value": f"{token}@example.com", "type": "work"}]}


class Writer(threading.Thread):
    """One client: sequential requests, so at most one has an unknown outcome when the daemon dies."""

    def __init__(self, port: int, prefix: str, group_id: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.prefix = prefix
        self.group_id = group_id
        self.rng = random.Random(seed)
        self.model = Model()
        self.ids: dict[str, str] = {}
        self.in_flight: Op | None = None
        self.acknowledged = 0
        self.unexpected: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for number in range(MAX_OPERATIONS):
                if self.stop.is_set():
                    return
                op = self._next(number)
                self.in_flight = op
                try:
                    status, body = self._send(conn, op)
                except (OSError, http.client.HTTPException):
                    return  # the daemon is gone: `op` stays in flight, its outcome unknown
                if status >= 300:
                    self.unexpected.append(f"{op}: {status} {body!r}")
                    return
                if op.kind == "create":
                    self.ids[op.name] = body["id"]
                self.model = apply(self.model, op)
                self.acknowledged += 1
                self.in_flight = None
        finally:
            conn.close()

    def _next(self, number: int) -> Op:
        live = sorted(self.model.users)
        token = f"tok{number}x{self.rng.randrange(10**6)}"
        kinds = ["create"] if len(live) < 3 else ["create", "patch", "patch", "add", "add", "remove", "delete"]
        kind = self.rng.choice(kinds)
        if kind == "create":
            return Op("create", f"{self.prefix}{number}", token)
        if kind == "add" and set(live) - self.model.members:
            return Op("add", self.rng.choice(sorted(set(live) - self.model.members)))
        if kind == "remove" and self.model.members:
            return Op("remove", self.rng.choice(sorted(self.model.members)))
        if kind == "delete":
            return Op("delete", self.rng.choice(live))
        return Op("patch", self.rng.choice(live), token)

    def _send(self, conn: http.client.HTTPConnection, op: Op) -> tuple[int, Any]:
        group = f"/scim/v2/Groups/{self.group_id}"
        match op.kind:
            case "create":
                return _request(conn, "POST", "/scim/v2/Users", {"userName": op.name, **fields_of(op.token)})
            case "patch":
                # Every attribute set to the same token in one PATCH: all of them change, or none.
                values = [op.token] * 4 + [f"{op.token}@example.com"]
                return _request(conn, "PATCH", f"/scim/v2/Users/{self.ids[op.name]}", {
                    "schemas": [PATCH_URN],
                    "Operations": [{"op": "replace", "path": path, "value": value} for path, value in zip(FIELDS, values)]})
            case "add":
                return _request(conn, "PATCH", group, {"schemas": [PATCH_URN], "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": self.ids[op.name]}]}]})
            case "remove":
                return _request(conn, "PATCH", group, {"schemas": [PATCH_URN], "Operations": [
                    {"op": "remove", "path": f'members[value eq "{self.ids[op.name]}"]'}]})
            case "delete":
                return _request(conn, "DELETE", f"/scim/v2/Users/{self.ids[op.name]}")
        raise AssertionError(op)


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = dict(AUTH)
    data = None
    if body is not None:
        data = orjson.dumps(body)
        headers["Content-Type"] = "application/scim+json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    return response.status, orjson.loads(raw) if raw else None


def check_database_file(path: Path) -> None:
    """The file as the kill left it (WAL included): sound, no membership pointing nowhere, and the
    email index rows written in the same transaction as the documents they index."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        indexed: dict[str, set[str]] = {}
        for rid, key in conn.execute("SELECT resource_id, key FROM value_keys WHERE attr = 'emails.value'"):
            indexed.setdefault(rid, set()).add(key)
        for rid, doc in conn.execute("SELECT id, doc FROM resources WHERE type = 'User'"):
            emails = {fold_case(email["value"]) for email in orjson.loads(doc).get("emails", [])}
            assert indexed.pop(rid, set()) == emails, f"email index out of step with user {rid}"
        assert not indexed, "email index rows of users that do not exist"
    finally:
        conn.close()


def observed(daemon: Daemon, writer: Writer) -> Model:
    """The writer's users and group as the restarted daemon serves them; a partly applied PATCH
    or a member that is not one of the writer's existing users fails here."""
    query = quote(f'userName sw "{writer.prefix}"')
    status, _, listing = daemon.request("GET", f"/scim/v2/Users?filter={query}&count=1000")
    assert status == 200 and listing["totalResults"] == len(listing["Resources"])
    users, names = {}, {}
    for user in listing["Resources"]:
        token = user["title"]
        seen = {"title": user.get("title"), "nickName": user.get("nickName"), "displayName": user.get("displayName"),
                "name.givenName": user.get("name", {}).get("givenName"),
                "email": [e["value"] for e in user.get("emails", [])]}
        assert seen == {"title": token, "nickName": token, "displayName": token, "name.givenName": token,
                        "email": [f"{token}@example.com"]}, f"half-applied write: {user}"
        users[user["userName"]] = token
        names[user["id"]] = user["userName"]
    status, _, group = daemon.request("GET", f"/scim/v2/Groups/{writer.group_id}")
    assert status == 200
    member_ids = [member["value"] for member in group.get("members", [])]
    assert set(member_ids) <= set(names), f"a member points at a missing user: {set(member_ids) - set(names)}"
    return Model(users, frozenset(names[mid] for mid in member_ids))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(KILLS))
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = tmp_path / "data"
    daemon = Daemon(data).start()
    writers: list[Writer] = []
    try:
        for index in range(WRITERS):
            status, _, group = daemon.request("POST", "/scim/v2/Groups", {"displayName": f"crash-group-{index}"})
            assert status == 201
            writers.append(Writer(daemon.port, f"w{index}-u", group["id"], seed * 100 + index))
        for writer in writers:
            writer.start()
        # Real work first (a loaded CI machine may be slow to start the writers), then a random moment.
        deadline = time.monotonic() + 30
        while sum(writer.acknowledged for writer in writers) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 1.2))
        assert daemon.process is not None
        daemon.process.kill()
        daemon.process.wait(timeout=10)
    finally:
        for writer in writers:
            writer.stop.set()
        for writer in writers:
            writer.join(timeout=15)
        daemon.stop()
    assert not any(writer.is_alive() for writer in writers)
    assert not [problem for writer in writers for problem in writer.unexpected]
    assert sum(writer.acknowledged for writer in writers) >= 10, "the kill came before any real work"

    check_database_file(data / "scim.db")

    restarted = Daemon(data).start()
    try:
        for writer in writers:
            actual = observed(restarted, writer)
            allowed = [writer.model] + ([apply(writer.model, writer.in_flight)] if writer.in_flight else [])
            assert actual in allowed, (f"{writer.prefix}: in flight {writer.in_flight}\n"
                                       f"acknowledged {writer.model}\nfound {actual}")
    finally:
        restarted.stop()
