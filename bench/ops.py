"""The measured operations, as request lists built from the seed manifest.

`prefix` is where the SCIM endpoints live ("/scim/v2" on scimd, "/v2" on scim2-server); the
ids, userNames and bodies are the same for every server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from bench.load import UNIQ, Request
from bench.seed import ENTERPRISE_URN, USER_URN, Manifest

PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
MEMBER_BLOCK = 128  # adds then removes of the same 128 users: more than the connections in flight


@dataclass(frozen=True)
class Op:
    name: str
    label: str
    peer: bool = True  # measured on the peer too


OPS = (
    Op("get_user", "GET /Users/{id}"),
    Op("filter_username", 'GET /Users?filter=userName eq "…"'),
    Op("filter_email", 'GET /Users?filter=emails[type eq "work"].value eq "…"'),
    Op("group_by_name", 'GET /Groups?excludedAttributes=members&filter=displayName eq "…"'),
    Op("page_100", "GET /Users?startIndex=N&count=100"),
    Op("post_user", "POST /Users"),
    Op("patch_user", "PATCH /Users/{id} replace title"),
    Op("patch_big_group", "PATCH /Groups/{All Staff} add/remove 1 member"),
    Op("patch_small_group", "PATCH /Groups/{Team Ten} add/remove 1 member"),
)
BY_NAME = {op.name: op for op in OPS}
FAMILY_CO = 'GET /Users?filter=name.familyName co "x"'


def _filter(attr_filter: str) -> str:
    return quote(attr_filter, safe="")


def new_user(tag: str = UNIQ) -> dict[str, object]:
    login = f"new.user.{tag}"
    return {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": f"{login}@example.com",
        "externalId": f"ext-{tag}",
        "name": {"givenName": "New", "familyName": "User", "formatted": "New User"},
        "displayName": "New User",
        "title": "Engineer",
        "active": True,
        "emails": [{"value": f"{login}@example.com", "type": "work", "primary": True}],
        ENTERPRISE_URN: {"employeeNumber": f"N-{tag}", "department": "Engineering", "organization": "Example Corp"},
    }


def requests_for(name: str, m: Manifest, prefix: str) -> list[Request]:
    rng = random.Random(name)
    users = list(zip(m.user_ids, m.user_names, m.user_emails))
    rng.shuffle(users)
    if name == "get_user":
        return [Request("GET", f"{prefix}/Users/{rid}") for rid, _, _ in users]
    if name == "filter_username":
        return [Request("GET", f"{prefix}/Users?filter=" + _filter(f'userName eq "{login}"')) for _, login, _ in users]
    if name == "filter_email":
        return [Request("GET", f"{prefix}/Users?filter=" + _filter(f'emails[type eq "work"].value eq "{mail}"'))
                for _, _, mail in users]
    if name == "group_by_name":
        names = list(m.group_names)
        rng.shuffle(names)
        return [Request("GET", f"{prefix}/Groups?excludedAttributes=members&filter="
                        + _filter(f'displayName eq "{group}"')) for group in names]
    if name == "page_100":
        top = max(1, m.users - 100)
        return [Request("GET", f"{prefix}/Users?startIndex={rng.randrange(1, top + 1)}&count=100")
                for _ in range(2000)]
    if name == "post_user":
        return [Request("POST", f"{prefix}/Users", orjson.dumps(new_user()))]
    if name == "patch_user":
        body = orjson.dumps({"schemas": [PATCH_URN],
                             "Operations": [{"op": "replace", "path": "title", "value": f"Title {UNIQ}"}]})
        return [Request("PATCH", f"{prefix}/Users/{rid}", body) for rid, _, _ in users]
    if name == "patch_big_group":
        return member_pairs(f"{prefix}/Groups/{m.all_staff_id}", m.spare[: len(m.spare) // 2])
    if name == "patch_small_group":
        return member_pairs(f"{prefix}/Groups/{m.team_ten_id}", m.spare[len(m.spare) // 2:])
    if name == "filter_co":
        return [Request("GET", f"{prefix}/Users?filter=" + _filter('name.familyName co "x"'))]
    raise KeyError(name)


def member_pairs(path: str, spare: list[str]) -> list[Request]:
    """Blocks of adds then removes of the same users, so the group's size stays where it was and
    an add never meets a member already there (a no-op would be cheaper)."""
    out: list[Request] = []
    for start in range(0, len(spare), MEMBER_BLOCK):
        block = spare[start:start + MEMBER_BLOCK]
        out += [Request("PATCH", path, orjson.dumps({"schemas": [PATCH_URN], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": sid}]}]})) for sid in block]
        out += [Request("PATCH", path, orjson.dumps({"schemas": [PATCH_URN], "Operations": [
            {"op": "remove", "path": f'members[value eq "{sid}"]'}]})) for sid in block]
    return out


def bulk_request(prefix: str, count: int, tag: str) -> Request:
    operations = [{"method": "POST", "path": "/Users", "bulkId": f"b{k}", "data": new_user(f"{tag}-{k}")}
                  for k in range(count)]
    return Request("POST", f"{prefix}/Bulk", orjson.dumps({"schemas": [BULK_URN], "Operations": operations}))


def single_posts(prefix: str, count: int, tag: str) -> list[Request]:
    return [Request("POST", f"{prefix}/Users", orjson.dumps(new_user(f"{tag}-{k}"))) for k in range(count)]
