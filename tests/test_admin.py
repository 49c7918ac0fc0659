"""The command line as an operator and a script use it: `scimd` run as a subprocess against real
data directories, with a real daemon where a command must cope with (or refuse) one.

Checks are on what the commands print, their exit codes (0 ok, 1 the work failed, 2 usage or
configuration), and on the data as `scimd export` and the SCIM API show it.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from scimd.schema import ENTERPRISE_URN, GROUP_URN, LIST_RESPONSE_URN, USER_URN
from scimd.store import MIGRATIONS
from tests.conftest import ROOT, Daemon, _measured

COMMANDS = ["serve", "check-config", "token", "backup", "restore", "export", "import", "stats"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def cli_env(data_dir: Path | None, **env: str) -> dict[str, str]:
    """The caller's environment without any SCIM_*/SHOWCASE_* setting, plus the given ones."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SCIM_", "SHOWCASE_"))}
    clean["PYTHONPATH"] = str(ROOT)
    if _measured():
        clean["COVERAGE_FILE"] = str(ROOT / ".coverage")  # the data lands where `coverage combine` looks
    if data_dir is not None:
        clean["SCIM_DATA_DIR"] = str(data_dir)
    return {**clean, **env}


def cli_command(*args: str) -> list[str]:
    cov = ["-m", "coverage", "run", "--rcfile", str(ROOT / "pyproject.toml")] if _measured() else []
    return [sys.executable, *cov, "-m", "scimd", *args]


def scimd(data_dir: Path | None, *args: str, cwd: Path = ROOT, **env: str) -> Result:
    done = subprocess.run(cli_command(*args), env=cli_env(data_dir, **env), cwd=cwd, capture_output=True,
                          timeout=60)
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def scimd_ok(data_dir: Path, *args: str) -> str:
    result = scimd(data_dir, *args)
    assert result.code == 0, result.err
    return result.out


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """Each entry a resource (dumped as JSON) or a raw line as is (to write broken files)."""
    path.write_text("".join((line if isinstance(line, str) else orjson.dumps(line).decode()) + "\n"
                            for line in lines))
    return path


def export(data_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in scimd_ok(data_dir, "export").splitlines()]


def by_name(resources: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Resources keyed by (type, userName/displayName), with ids, meta and $refs replaced by names,
    so directories with different ids compare equal when they hold the same data."""
    names = {r["id"]: r.get("userName") or r["displayName"] for r in resources}
    keyed = {}
    for resource in resources:
        plain = {k: v for k, v in resource.items() if k not in ("id", "meta")}
        if "members" in plain:
            plain["members"] = sorted((m["type"], names[m["value"]]) for m in plain["members"])
        if "groups" in plain:
            plain["groups"] = sorted(names[g["value"]] for g in plain["groups"])
        keyed[(resource["meta"]["resourceType"], names[resource["id"]])] = plain
    return keyed


def user(file_id: str, user_name: str, **attrs: Any) -> dict[str, Any]:
    return {"schemas": [USER_URN], "id": file_id, "userName": user_name, **attrs}


def group(file_id: str, name: str, *member_ids: str) -> dict[str, Any]:
    return {"schemas": [GROUP_URN], "id": file_id, "displayName": name, "members": [{"value": m} for m in member_ids]}


# As an IdP's export or a hand-made migration file would hold them; ids are the file's own.
SEED = [
    user("u1", "alice@example.com", name={"givenName": "Alice", "familyName": "Liddell"}, password="Wonder-land-1",
         emails=[{"value": "alice@example.com", "type": "work", "primary": True}], active=True),
    user("u2", "bob", active=False, **{ENTERPRISE_URN: {"department": "R&D", "employeeNumber": "42"}}),
    user("u3", "zoë@example.com", displayName="Zoë", active=True),
    {"schemas": [USER_URN], "userName": "no-id@example.com", "active": False},  # no group can name it: fine
    group("g1", "Admins", "u1", "g2"),
    group("g2", "Ops", "u2", "u3"),
]


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SEED imported once; each test gets its own copy (the CLI leaves no WAL behind to copy)."""
    data = tmp_path_factory.mktemp("template") / "data"
    scimd_ok(data, "import", str(write_jsonl(data.parent / "seed.jsonl", SEED)))
    return data


@pytest.fixture
def seeded(seeded_template: Path, tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "seed.jsonl", SEED)
    data = tmp_path / "seeded"
    data.mkdir(mode=0o700)
    shutil.copy2(seeded_template / "scim.db", data / "scim.db")
    return data


# --- usage, configuration, token ------------------------------------------------------------


@pytest.mark.parametrize("args", [[], *([command] for command in COMMANDS)], ids=lambda a: " ".join(a) or "scimd")
def test_help_exits_0_without_environment_or_data_dir(tmp_path: Path, args: list[str]) -> None:
    """The container build runs `scimd --help` with no environment: it must not need one, nor write."""
    result = scimd(None, *args, "--help", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.out.startswith("usage: scimd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["backup"], ["restore"], ["import"], ["export", "--bogus"], ["frobnicate"],
                                  ["stats", "extra"]], ids=" ".join)
def test_bad_usage_exits_2(tmp_path: Path, args: list[str]) -> None:
    result = scimd(tmp_path / "data", *args)
    assert result.code == 2
    assert "usage: scimd" in result.err


@pytest.mark.parametrize(("args", "variable", "value"), [
    (["check-config"], "SCIM_LOOKING_GLASS", "maybe"),
    (["check-config"], "SHOWCASE_LISTEN_ADDR", "everywhere"),
    (["serve"], "SCIM_THREADS", "0"),
    (["stats"], "SCIM_LOG_LEVEL", "chatty"),
    (["backup", "copy.db"], "SHOWCASE_BASE_URL", "ftp://example.com"),
    (["restore", "copy.db"], "SCIM_MAX_RESULTS", "lots"),
    (["export"], "SCIM_RATE_LIMIT", "-1"),
    (["import", "file.jsonl"], "SCIM_BULK_MAX_OPERATIONS", "0"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_configuration_exits_2_with_one_line_naming_the_variable(
        tmp_path: Path, args: list[str], variable: str, value: str) -> None:
    result = scimd(tmp_path / "data", *args, **{variable: value})
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert variable in result.err and repr(value) in result.err
    assert not (tmp_path / "data").exists()


def test_check_config_masks_the_token(tmp_path: Path) -> None:
    secret = "s3cret-token-value-0123456789"
    result = scimd(tmp_path / "data", "check-config", SCIM_API_TOKEN=secret, SCIM_THREADS="4")
    assert result.code == 0, result.err
    assert secret not in result.out
    shown = orjson.loads(result.out)
    assert shown["api_tokens"] == [f"***({len(secret)} chars)"]
    assert shown["threads"] == 4
    assert shown["data_dir"] == str(tmp_path / "data")


def test_token_is_strong_and_fresh(tmp_path: Path) -> None:
    tokens = [scimd_ok(tmp_path, "token") for _ in range(2)]
    for token in tokens:
        assert token.endswith("\n") and token.count("\n") == 1
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token.strip())  # at least 256 random bits
    assert tokens[0] != tokens[1]


@pytest.mark.parametrize("args", [["stats"], ["export"], ["backup", "copy.db"]], ids=" ".join)
def test_reading_commands_need_a_database_and_create_none(tmp_path: Path, args: list[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    result = scimd(data, *args, cwd=tmp_path)
    assert result.code == 1
    assert len(result.err_lines) == 1 and "no database at" in result.err
    assert list(data.iterdir()) == [] and not (tmp_path / "copy.db").exists()


# --- stats ----------------------------------------------------------------------------------


def test_stats_json(seeded: Path) -> None:
    numbers = orjson.loads(scimd_ok(seeded, "stats", "--json"))
    wal = seeded / "scim.db-wal"
    assert numbers == {
        "users": 4, "active_users": 2, "groups": 2, "memberships": 4, "schema_version": len(MIGRATIONS),
        "database_bytes": (seeded / "scim.db").stat().st_size + (wal.stat().st_size if wal.exists() else 0),
        "database_path": str(seeded / "scim.db"),
    }


def test_stats_for_people(seeded: Path) -> None:
    lines = scimd_ok(seeded, "stats").splitlines()
    for pattern in (r"users\s+4", r"active users\s+2", r"groups\s+2", r"memberships\s+4",
                    rf"schema version\s+{len(MIGRATIONS)}", r"database size\s+\d+\.\d (KiB|MiB) \(.*scim\.db and its WAL\)"):
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, lines)


# --- export and import ----------------------------------------------------------------------


def test_export_is_what_get_returns_without_passwords(seeded: Path) -> None:
    resources = export(seeded)
    assert [r["meta"]["resourceType"] for r in resources] == ["User"] * 4 + ["Group"] * 2
    keyed = by_name(resources)
    assert keyed[("User", "bob")] == {
        "schemas": [USER_URN, ENTERPRISE_URN], "userName": "bob", "active": False, "groups": ["Ops"],
        ENTERPRISE_URN: {"department": "R&D", "employeeNumber": "42"}}
    assert keyed[("Group", "Admins")]["members"] == [("Group", "Ops"), ("User", "alice@example.com")]
    assert keyed[("User", "alice@example.com")]["groups"] == ["Admins"]
    assert all("password" not in r for r in resources)


def test_export_to_a_private_file(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "export.jsonl"
    result = scimd(seeded, "export", "--output", str(target))
    assert (result.code, result.out, result.err) == (0, "", "")
    assert target.read_text() == scimd_ok(seeded, "export")
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_import_twice_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = write_jsonl(tmp_path / "seed.jsonl", SEED)
    first = scimd(data, "import", str(seed))
    assert first.code == 0, first.err
    assert first.out == (f"imported {seed}: users 4 created, 0 updated, 0 unchanged; "
                         "groups 2 created, 0 updated, 0 unchanged\n")
    assert first.err == ""
    before = scimd_ok(data, "export")
    second = scimd_ok(data, "import", str(seed))
    assert second.endswith("users 0 created, 0 updated, 4 unchanged; groups 0 created, 0 updated, 2 unchanged\n")
    assert scimd_ok(data, "export") == before  # same ids, same versions: nothing was written


def test_import_upserts_by_name_case_insensitively(seeded: Path, tmp_path: Path) -> None:
    stored_ids = {r["id"] for r in export(seeded)}
    changes = [
        user("x1", "ALICE@example.com", displayName="Alice L.", active=True),
        group("x2", "Admins", "x1", "x3"),  # the stored members, under the file's ids
        group("x3", "ops", "x1"),
    ]
    result = scimd_ok(seeded, "import", str(write_jsonl(tmp_path / "changes.jsonl", changes)))
    assert result.endswith("users 0 created, 1 updated, 0 unchanged; groups 0 created, 1 updated, 1 unchanged\n")
    after = export(seeded)
    assert {r["id"] for r in after} == stored_ids  # updated in place
    keyed = by_name(after)
    assert keyed[("User", "ALICE@example.com")] == {  # replaced, as PUT does: emails and name are gone
        "schemas": [USER_URN], "userName": "ALICE@example.com", "displayName": "Alice L.", "active": True,
        "groups": ["Admins", "ops"]}
    assert keyed[("Group", "ops")]["members"] == [("User", "ALICE@example.com")]
    assert keyed[("User", "bob")]["active"] is False  # absent from the file: left alone


def test_export_import_export_round_trip(daemon: Daemon, tmp_path: Path) -> None:
    """Data provisioned over the API survives export -> import into an empty directory -> export."""
    ids = {}
    for body in [
        {"userName": "ada@example.com", "name": {"givenName": "Ada", "familyName": "Lovelace"}, "password": "pw-1!Aa",
         "emails": [{"value": "ada@example.com", "type": "work", "primary": True}], "title": "Countess"},
        {"userName": "Grace", "active": False, "phoneNumbers": [{"value": "+1 555 0100", "type": "work"}],
         ENTERPRISE_URN: {"department": "Navy", "manager": {"value": "someone"}}},
        {"userName": "Ünal", "externalId": "idp-7", "locale": "tr-TR"},
    ]:
        status, _, created = daemon.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], **body})
        assert status == 201, created
        ids[body["userName"]] = created["id"]
    for name, members in [("Engineers", [ids["ada@example.com"], ids["Ünal"]]), ("Everyone", [ids["Grace"]])]:
        status, _, created = daemon.request("POST", "/scim/v2/Groups", {
            "schemas": [GROUP_URN], "displayName": name, "members": [{"value": m} for m in members]})
        assert status == 201, created
        ids[name] = created["id"]
    status, _, _ = daemon.request("PATCH", f"/scim/v2/Groups/{ids['Everyone']}", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": ids["Engineers"]}]}]})
    assert status in (200, 204)

    data_dir = Path(daemon.env["SCIM_DATA_DIR"])
    exported = tmp_path / "export.jsonl"
    scimd_ok(data_dir, "export", "--output", str(exported))  # while the daemon serves
    copy = tmp_path / "copy"
    imported = scimd_ok(copy, "import", str(exported))
    assert imported.endswith("users 3 created, 0 updated, 0 unchanged; groups 2 created, 0 updated, 0 unchanged\n")
    original = [orjson.loads(line) for line in exported.read_text().splitlines()]
    assert by_name(export(copy)) == by_name(original)
    assert all("password" not in r for r in original)
    assert by_name(original)[("Group", "Everyone")]["members"] == [("Group", "Engineers"), ("User", "Grace")]
    assert {r["id"] for r in export(copy)}.isdisjoint(r["id"] for r in original)  # the new directory's own ids


def test_import_accepts_a_list_response(tmp_path: Path, seeded: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_bytes(orjson.dumps({"schemas": [LIST_RESPONSE_URN], "totalResults": len(SEED), "itemsPerPage":
                                     len(SEED), "startIndex": 1, "Resources": SEED}, option=orjson.OPT_INDENT_2))
    data = tmp_path / "from-list"
    result = scimd_ok(data, "import", str(listed))
    assert result.endswith("users 4 created, 0 updated, 0 unchanged; groups 2 created, 0 updated, 0 unchanged\n")
    assert by_name(export(data)) == by_name(export(seeded))


@pytest.mark.parametrize(("resources", "message"), [
    ({"Operations": []}, "'Resources' must be an array"),
    ([SEED[0], {"schemas": [USER_URN], "userName": ""}], "Resources[1]: 'userName' is required."),
], ids=["Resources not an array", "a bad resource"])
def test_import_of_a_broken_list_response(seeded: Path, tmp_path: Path, resources: Any, message: str) -> None:
    listed = tmp_path / "list.json"
    listed.write_bytes(orjson.dumps({"schemas": [LIST_RESPONSE_URN], "Resources": resources}))
    before = scimd_ok(seeded, "export")
    result = scimd(seeded, "import", str(listed))
    assert result.code == 1
    assert result.err_lines == [f"scimd import: {listed}: {message} (nothing was imported)"]
    assert scimd_ok(seeded, "export") == before


# A valid beginning (a new user, a changed one, a changed group) and then one bad entry: the file
# as a whole is refused. Two of the failures happen only inside the transaction, after users were
# written: those prove the rollback.
VALID_START = [
    user("n1", "carol@example.com", active=True),
    user("n2", "Alice@Example.com", displayName="changed", active=False),
    group("n3", "Admins", "n1", "n2"),
]
BROKEN = {
    "not JSON": (['{"userName": "dave"'], "line 4: not JSON"),
    "no userName": ([{"schemas": [USER_URN], "displayName": "Nameless"}], "line 4: 'userName' is required"),
    "wrong value type": ([user("n4", "erin", active="perhaps")], "line 4: 'active' must be a boolean"),
    "an array, not an object": (["[1, 2]"], "line 4: not a JSON object"),
    "neither User nor Group": ([{"schemas": ["urn:example:Printer"], "name": "lp0"}], "neither a User nor a Group"),
    "same userName twice": ([user("n4", "CAROL@example.com")], "User 'CAROL@example.com' is also at"),
    "same id twice": ([user("n1", "frank")], "id 'n1' is also at"),
    "member not in the file": ([group("n4", "Temps", "n1", "nobody")], "member 'nobody' is not a User or Group"),
    "groups in a cycle": ([group("n4", "A", "n5"), group("n5", "B", "n4")], "cannot contain itself"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_import_of_a_broken_file_changes_nothing(seeded: Path, tmp_path: Path, case: str) -> None:
    bad_lines, message = BROKEN[case]
    before = scimd_ok(seeded, "export")
    result = scimd(seeded, "import", str(write_jsonl(tmp_path / "broken.jsonl", VALID_START + bad_lines)))
    assert result.code == 1
    assert len(result.err_lines) == 1, result.err
    assert message in result.err and result.err.rstrip().endswith("(nothing was imported)")
    assert result.out == ""
    assert scimd_ok(seeded, "export") == before


def test_import_of_a_missing_file(tmp_path: Path) -> None:
    result = scimd(tmp_path / "data", "import", str(tmp_path / "nope.jsonl"))
    assert result.code == 1
    assert result.err_lines == [f"scimd import: {tmp_path / 'nope.jsonl'}: No such file or directory"]


def run_on_a_terminal(data_dir: Path, *args: str) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal, as an operator at a shell would; return what it showed."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(cli_command(*args), env=cli_env(data_dir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=terminal) as process:
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=60)
    os.close(controller)
    return code, shown.decode()


@pytest.mark.parametrize("args", [["export"], ["import", "{seed}"]], ids=" ".join)
def test_progress_bar_on_a_terminal_only(seeded: Path, tmp_path: Path, args: list[str]) -> None:
    argv = [arg.format(seed=tmp_path / "seed.jsonl") for arg in args]
    code, shown = run_on_a_terminal(seeded, *argv)
    assert code == 0, shown
    assert re.search(rf"{args[0]} \[#+\] 6/6 100%", shown), shown
    quiet = scimd(seeded, *argv)
    assert (quiet.code, quiet.err) == (0, "")


def test_export_into_a_closed_pipe(seeded: Path, tmp_path: Path) -> None:
    """`scimd export | head -1`: one clear line and exit 1, no traceback."""
    many = [user(f"m{n}", f"user-{n:04d}@example.com", displayName="x" * 200) for n in range(600)]
    scimd_ok(seeded, "import", str(write_jsonl(tmp_path / "many.jsonl", many)))
    with subprocess.Popen(cli_command("export"), env=cli_env(seeded), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith(b"{")
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=60) == 1
    assert err.splitlines() == ["scimd export: the output was closed before the export was complete"]


# --- backup ---------------------------------------------------------------------------------


def integrity(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    return rows


def user_names(data_dir: Path) -> set[str]:
    return {r["userName"] for r in export(data_dir) if "userName" in r}


class Writer:
    """Creates users over HTTP as fast as the daemon takes them, recording each acknowledged one."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.acknowledged: list[str] = []
        self.failures: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            name = f"writer-{n:05d}"
            status, _, body = self.daemon.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], "userName": name})
            if status == 201:
                self.acknowledged.append(name)
            else:
                self.failures.append((status, body))
            n += 1

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} writes acknowledged"
            time.sleep(0.01)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def writer(daemon: Daemon) -> Iterator[Writer]:
    running = Writer(daemon).start()
    yield running
    running.stop()


@pytest.mark.slow
def test_backup_while_the_daemon_serves_and_writes(daemon: Daemon, writer: Writer, tmp_path: Path) -> None:
    writer.wait_for(30)
    acknowledged_before = list(writer.acknowledged)
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "backup.db"
    result = scimd(Path(daemon.env["SCIM_DATA_DIR"]), "backup", str(target))
    after_backup = len(writer.acknowledged)
    writer.wait_for(after_backup + 20)  # the daemon's writes kept flowing
    writer.stop()
    assert result.code == 0, result.err
    assert re.fullmatch(rf"backed up \d+ users, 0 groups \(schema version {len(MIGRATIONS)}\) to {re.escape(str(target))}"
                        r" \(\d+\.\d KiB\)\n", result.out), result.out
    assert writer.failures == []
    assert integrity(target) == [("ok",)]
    assert sorted(p.name for p in backups.iterdir()) == ["backup.db"]  # one self-contained file
    assert target.stat().st_mode & 0o777 == 0o600
    restored = tmp_path / "restored"
    scimd_ok(restored, "restore", str(target))
    in_backup = user_names(restored)
    assert set(acknowledged_before) <= in_backup
    assert in_backup <= set(writer.acknowledged)  # nothing half-written or invented


def test_backup_refuses_to_overwrite_without_force(seeded: Path, tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    target.write_bytes(b"an older backup")
    refused = scimd(seeded, "backup", str(target))
    assert refused.code == 1
    assert refused.err_lines == [f"scimd backup: {target} exists: choose another path or pass --force to overwrite it"]
    assert target.read_bytes() == b"an older backup"
    forced = scimd(seeded, "backup", "--force", str(target))
    assert forced.code == 0, forced.err
    assert integrity(target) == [("ok",)]


def test_backup_of_a_damaged_database_fails_and_leaves_no_file(seeded: Path, tmp_path: Path) -> None:
    break_an_index(seeded / "scim.db")
    backups = tmp_path / "backups"
    backups.mkdir()
    result = scimd(seeded, "backup", str(backups / "backup.db"))
    assert result.code == 1
    assert result.err_lines == ["scimd backup: integrity check failed: row 1 missing from index resources_external_id; "
                                "row 2 missing from index resources_external_id; row 3 missing from index "
                                "resources_external_id"]
    assert list(backups.iterdir()) == []


def test_backup_into_a_missing_directory(seeded: Path, tmp_path: Path) -> None:
    result = scimd(seeded, "backup", str(tmp_path / "no" / "such" / "dir" / "backup.db"))
    assert result.code == 1
    assert len(result.err_lines) == 1 and "No such file or directory" in result.err


# --- restore --------------------------------------------------------------------------------


@pytest.mark.slow
def test_restore_is_refused_while_the_daemon_runs_and_works_after(daemon: Daemon, tmp_path: Path) -> None:
    data_dir = Path(daemon.env["SCIM_DATA_DIR"])
    assert daemon.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], "userName": "in-backup"})[0] == 201
    backup = tmp_path / "backup.db"
    scimd_ok(data_dir, "backup", str(backup))
    assert daemon.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], "userName": "after-backup"})[0] == 201

    refused = scimd(data_dir, "restore", str(backup))
    assert refused.code == 1
    assert refused.err_lines == [f"scimd restore: {data_dir} is in use by another scimd process "
                                 f"(pid {daemon.process.pid}): stop the daemon, restore, then start it again"]
    status, _, listed = daemon.request("GET", "/scim/v2/Users")
    assert status == 200 and {r["userName"] for r in listed["Resources"]} == {"in-backup", "after-backup"}

    assert daemon.stop() == 0
    restored = scimd(data_dir, "restore", str(backup))
    assert restored.code == 0, restored.err
    assert restored.out == (f"restored 1 users, 0 groups (schema version {len(MIGRATIONS)}) from {backup} "
                            f"into {data_dir / 'scim.db'}\n")
    again = Daemon(data_dir).start()
    try:
        status, _, listed = again.request("GET", "/scim/v2/Users")
        assert status == 200 and [r["userName"] for r in listed["Resources"]] == ["in-backup"]
        assert again.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], "userName": "after-restore"})[0] == 201
    finally:
        assert again.stop() == 0
    assert user_names(data_dir) == {"in-backup", "after-restore"}


def corrupt(path: Path) -> None:
    """Keep the header page, overwrite every other page: SQLite opens it, the check fails."""
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)
    path.write_bytes(bytes(data))


def break_an_index(path: Path) -> None:
    """Redefine an index behind SQLite's back: every file page is sound, the index no longer
    matches its table, and only `PRAGMA integrity_check` notices."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX resources_external_id ON resources "
                     "(last_modified, type)' WHERE name = 'resources_external_id'")
    conn.close()


def set_version(version: int) -> Any:
    def change(path: Path) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {version}")
        conn.close()
    return change


def replace_with(content: bytes) -> Any:
    def change(path: Path) -> None:
        path.write_bytes(content)
    return change


def plain_sqlite(path: Path) -> None:
    path.unlink()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()


BAD_BACKUPS = {
    "not SQLite": (replace_with(b"name,email\nalice,alice@example.com\n" * 200), "file is not a database"),
    "empty": (replace_with(b""), "not a scimd database (schema version 0)"),
    "corrupt": (corrupt, "integrity check failed: database disk image is malformed"),
    "index out of step": (break_an_index, "integrity check failed: row 1 missing from index resources_external_id"),
    "newer schema": (set_version(len(MIGRATIONS) + 1), f"schema is version {len(MIGRATIONS) + 1}, newer than this "
                     f"scimd understands ({len(MIGRATIONS)})"),
    "another application's database": (plain_sqlite, "not a scimd database (schema version 0)"),
    "missing": (lambda path: path.unlink(), "no database at"),
}


@pytest.mark.parametrize("case", BAD_BACKUPS)
def test_restore_checks_the_backup_first(seeded: Path, tmp_path: Path, case: str) -> None:
    spoil, message = BAD_BACKUPS[case]
    backup = tmp_path / "backup.db"
    scimd_ok(seeded, "backup", str(backup))
    spoil(backup)
    before = scimd_ok(seeded, "export")
    result = scimd(seeded, "restore", str(backup))
    assert result.code == 1
    assert len(result.err_lines) == 1 and result.err.startswith("scimd restore: ") and message in result.err
    assert scimd_ok(seeded, "export") == before
    assert not [p for p in seeded.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_restore_after_a_crash_drops_the_stale_wal(seeded: Path, tmp_path: Path) -> None:
    """kill -9 leaves committed pages in scim.db-wal: replayed onto the restored file they would
    bring back (or scramble) the old data."""
    backup = tmp_path / "backup.db"
    scimd_ok(seeded, "backup", str(backup))
    crashed = Daemon(seeded).start()
    try:
        assert crashed.request("POST", "/scim/v2/Users", {"schemas": [USER_URN], "userName": "in-the-wal"})[0] == 201
    finally:
        assert crashed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert (seeded / "scim.db-wal").stat().st_size > 0
    restored = scimd(seeded, "restore", str(backup))
    assert restored.code == 0, restored.err
    assert user_names(seeded) == {"alice@example.com", "bob", "zoë@example.com", "no-id@example.com"}
    assert integrity(seeded / "scim.db") == [("ok",)]
    assert not (seeded / "scim.db-wal").exists() or (seeded / "scim.db-wal").stat().st_size == 0
    assert (seeded / "scim.db").stat().st_mode & 0o777 == 0o600


# --- one daemon per data directory ----------------------------------------------------------


@pytest.mark.slow
def test_a_second_daemon_on_the_same_data_dir_is_refused(daemon: Daemon) -> None:
    data_dir = Path(daemon.env["SCIM_DATA_DIR"])
    second = Daemon(data_dir)
    try:
        with pytest.raises(RuntimeError) as refused:
            second.start()
    finally:
        assert second.stop() == 1
    assert (f"cannot open the data directory: {data_dir} is in use by another scimd process (pid "
            f"{daemon.process.pid})") in str(refused.value)
    assert daemon.request("GET", "/scim/v2/Users")[0] == 200
