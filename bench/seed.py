"""A realistic, deterministic directory, written straight through scimd's storage layer.

Users have names, a work email, a title, and enterprise data (employeeNumber, department,
manager); every user is in the "All Staff" group (as many members as --users) and in a
department group; "Team Ten" has 10 members; a few hundred small project groups exist. A
pool of spare users, in no group, feeds the member add/remove benchmarks.

Seeding goes through Store/Tx (one transaction per 100,000 users, member edges through
Tx.add_members' executemany), never through HTTP. Each document is built in the form
parse_resource() stores; a sample is checked against parse_resource() so the two cannot drift.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson

from scimd.resource import parse_resource
from scimd.schema import ENTERPRISE_URN, GROUP_TYPE, GROUP_URN, USER_TYPE, USER_URN
from scimd.store import Store

FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "John", "Radia",
         "Vint", "Hedy", "Tim", "Karen", "Edsger", "Sophie", "Niklaus", "Katherine", "Bjarne", "Anita", "Guido",
         "Shafi", "Donald", "Adele", "Leslie", "Joan", "Butler", "Mary", "Robin", "Jean", "Fernando", "Lynn",
         "Ivan", "Carol", "Alexander", "Yukihiro", "Rasmus", "Xiao", "Priya", "Amara", "Mateo", "Ingrid",
         "Kwame", "Olga", "Diego", "Aiko", "Omar", "Freya", "Tariq")
LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen",
        "McCarthy", "Perlman", "Cerf", "Lamarr", "Berners-Lee", "Jones", "Dijkstra", "Wilson", "Wirth",
        "Johnson", "Stroustrup", "Borg", "van Rossum", "Goldwasser", "Knuth", "Goldberg", "Lamport", "Clarke",
        "Lampson", "Shaw", "Milner", "Sammet", "Corbato", "Conway", "Sutherland", "Kay", "Stepanov",
        "Matsumoto", "Lerdorf", "Fox", "Maxwell", "Baxter", "Cox", "Wilcox", "Knox", "Patel", "Okafor",
        "Garcia", "Nilsen", "Mensah", "Ivanova", "Silva", "Tanaka", "Haddad", "Larsen", "Rahman")
DEPARTMENTS = ("Engineering", "Sales", "Marketing", "Finance", "Legal", "Support", "Operations", "Research",
               "Design", "People", "Security", "Facilities")
TITLES = ("Engineer", "Senior Engineer", "Manager", "Director", "Analyst", "Specialist", "Associate", "Lead",
          "Consultant", "Coordinator")
ALL_STAFF = "All Staff"
TEAM_TEN = "Team Ten"
SPARE_USERS = 1024  # in no group: the member add/remove benchmarks add and remove these
PROJECT_GROUPS = 200
USERS_PER_TX = 100_000
SAMPLE = 5000  # ids, userNames and emails kept in the manifest for the load generators
MANIFEST = "bench-manifest.json"


@dataclass
class Manifest:
    """What the load generators need to know about the seeded data."""

    users: int
    spare: list[str]  # ids of users in no group
    user_ids: list[str]  # a random sample of seeded user ids
    user_names: list[str]  # userNames of the same sample
    user_emails: list[str]
    group_names: list[str]  # every group's displayName
    all_staff_id: str = ""
    team_ten_id: str = ""
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def save(self, data_dir: Path) -> None:
        (data_dir / MANIFEST).write_bytes(orjson.dumps(asdict(self)))

    @classmethod
    def load(cls, data_dir: Path) -> Manifest:
        return cls(**orjson.loads((data_dir / MANIFEST).read_bytes()))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def user_body(i: int, rid: str, manager: str | None, rng: random.Random, prefix: str = "") -> dict[str, Any]:
    """The SCIM JSON an IdP would POST for user number i."""
    first = FIRST[i % len(FIRST)]
    last = LAST[(i // len(FIRST) + rng.randrange(7)) % len(LAST)]
    login = f"{prefix}{first}.{last}.{i}".lower().replace(" ", "")
    department = DEPARTMENTS[i % len(DEPARTMENTS)]
    enterprise: dict[str, Any] = {"employeeNumber": f"E{i:07d}", "department": department,
                                  "organization": "Example Corp"}
    if manager:
        enterprise["manager"] = {"value": manager}
    return {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": rid[:8] + f"-{i}",
        "userName": f"{login}@example.com",
        "name": {"givenName": first, "familyName": last, "formatted": f"{first} {last}"},
        "displayName": f"{first} {last}",
        "title": TITLES[rng.randrange(len(TITLES))],
        "active": True,
        "emails": [{"value": f"{login}@example.com", "type": "work", "primary": True}],
        ENTERPRISE_URN: enterprise,
    }


def user_doc(body: dict[str, Any]) -> dict[str, Any]:
    """The document parse_resource() stores for user_body()'s output (checked on a sample)."""
    doc = {k: v for k, v in body.items() if k != "schemas"}
    return doc


def group_body(name: str) -> dict[str, Any]:
    return {"schemas": [GROUP_URN], "displayName": name}


def generate(users: int, seed: int = 11) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, SCIM body) for each user; the manager of user i is user i // 10 (the first has none)."""
    rng = random.Random(seed)
    ids = [_uuid(rng) for _ in range(users)]
    for i in range(users):
        manager = ids[i // 10] if i else None
        yield ids[i], user_body(i, ids[i], manager, rng)


def spare_users(users: int) -> list[tuple[str, dict[str, Any]]]:
    """(id, SCIM body) of the spare users: in no group, for the member add/remove benchmarks."""
    rng = random.Random(99)
    return [(_uuid(rng), user_body(users + k, "", None, rng, prefix="spare.")) for k in range(SPARE_USERS)]


def group_plan(ids: list[str]) -> list[tuple[str, str, list[str]]]:
    """(id, displayName, member ids) of every group: All Staff first, then Team Ten."""
    rng = random.Random(13)
    plan = [(_uuid(rng), ALL_STAFF, ids), (_uuid(rng), TEAM_TEN, ids[:10])]
    plan += [(_uuid(rng), f"Department {d}", ids[k::len(DEPARTMENTS)]) for k, d in enumerate(DEPARTMENTS)]
    plan += [(_uuid(rng), f"Project {k:03d}", rng.sample(ids, min(len(ids), rng.randrange(10, 60))))
             for k in range(PROJECT_GROUPS)]
    return plan


def seed(data_dir: Path, users: int, log: Any = print) -> Manifest:
    """Create data_dir/scim.db holding `users` users and their groups; returns the manifest."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "scim.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    store = Store(db)
    sample = sorted(random.Random(7).sample(range(users), min(SAMPLE, users)))
    wanted = set(sample)
    ids: list[str] = []
    picked: dict[int, tuple[str, str, str]] = {}
    try:
        batch: list[tuple[str, dict[str, Any]]] = []
        for i, (rid, body) in enumerate(generate(users)):
            if i < 50:
                _check_doc(body)
            batch.append((rid, body))
            ids.append(rid)
            if i in wanted:
                picked[i] = (rid, body["userName"], body["emails"][0]["value"])
            if len(batch) == USERS_PER_TX:
                _insert_users(store, batch)
                batch = []
                log(f"seed: {i + 1:,} users ({time.perf_counter() - started:.0f} s)")
        _insert_users(store, batch)
        spare = spare_users(users)
        _insert_users(store, spare)
        plan = group_plan(ids)
        with store.write() as tx:
            for gid, name, members in plan:
                tx.insert(GROUP_TYPE, gid, parse_resource(GROUP_TYPE, group_body(name)).doc, None)
                tx.add_members(gid, members)
        counts = store.counts()
    finally:
        store.close()
    manifest = Manifest(
        users=users, spare=[rid for rid, _ in spare],
        user_ids=[picked[i][0] for i in sample], user_names=[picked[i][1] for i in sample],
        user_emails=[picked[i][2] for i in sample], group_names=[name for _, name, _ in plan],
        all_staff_id=plan[0][0], team_ten_id=plan[1][0], seconds=round(time.perf_counter() - started, 2),
        counts=counts)
    manifest.save(data_dir)
    log(f"seed: {users:,} users (+{SPARE_USERS} spare), {counts['groups']:,} groups, "
        f"{counts['memberships']:,} memberships in {manifest.seconds:.1f} s")
    return manifest


def existing_or_seeded(data: str | None, scratch: Path, users: int) -> tuple[Path, Manifest]:
    """The tools' --data: a directory a full run seeded (and kept with --reuse), or else `users`
    seeded quietly into `scratch`."""
    if data:
        return Path(data), Manifest.load(Path(data))
    return scratch / "data", seed(scratch / "data", users, log=lambda *_: None)


def _check_doc(body: dict[str, Any]) -> None:
    parsed = parse_resource(USER_TYPE, body).doc
    if parsed != user_doc(body):
        raise AssertionError(f"seed documents drifted from parse_resource(): {parsed} != {user_doc(body)}")


def _insert_users(store: Store, batch: list[tuple[str, dict[str, Any]]]) -> None:
    if not batch:
        return
    with store.write() as tx:
        tx.conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while seeding: random-key index inserts
        for rid, body in batch:
            tx.insert(USER_TYPE, rid, user_doc(body), None)
