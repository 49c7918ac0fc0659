"""Concurrent writers against the real daemon: a UNIQUE index decides who gets a userName, an
If-Match version lets exactly one writer through, concurrent membership changes lose nothing,
and no race ends in a 500."""

from __future__ import annotations

import http.client
import threading
from typing import Any, Callable, Iterator

import orjson
import pytest

from tests.conftest import AUTH, ERROR_URN, PATCH_URN, Daemon

pytestmark = pytest.mark.slow

Answer = tuple[int, dict[str, str], Any]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    process = Daemon(tmp_path_factory.mktemp("races") / "data", SCIM_THREADS="8").start()
    try:
        yield process
    finally:
        process.stop()


def call(daemon: Daemon, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """One request on its own connection, so concurrent calls really run side by side."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        sent = {**AUTH, **(headers or {})}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/scim+json"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, orjson.loads(raw) if raw else None
    finally:
        conn.close()


def all_at_once(count: int, work: Callable[[int], Answer]) -> list[Answer]:
    """Run work(0..count-1) in `count` threads released together by a barrier."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[Answer | BaseException | None] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the others
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung"
    failures = [result for result in results if not isinstance(result, tuple)]
    assert not failures, failures
    return results  # type: ignore[return-value]


def statuses(answers: list[Answer]) -> list[int]:
    return sorted(answer[0] for answer in answers)


def assert_errors(answers: list[Answer], status: int, scim_type: str) -> None:
    for code, headers, body in answers:
        if code == status:
            assert headers["content-type"].startswith("application/scim+json")
            assert body["schemas"] == [ERROR_URN] and body["status"] == str(status) and body["scimType"] == scim_type


def create(daemon: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, _, document = call(daemon, "POST", path, body)
    assert status == 201, document
    return document  # type: ignore[no-any-return]


@pytest.mark.parametrize("spelling", ["same", "case"])
def test_concurrent_creates_of_one_user_name_give_one_201(daemon: Daemon, spelling: str) -> None:
    """20 creates of one userName (the same, or differing in case: userName is caseExact=false)."""
    name = f"racer-{spelling}"
    answers = all_at_once(20, lambda i: call(daemon, "POST", "/scim/v2/Users", {
        "userName": name if spelling == "same" else "".join(c.upper() if (i >> n) & 1 else c
                                                             for n, c in enumerate(name))}))
    assert statuses(answers) == [201] + [409] * 19
    assert_errors(answers, 409, "uniqueness")
    found = call(daemon, "GET", f'/scim/v2/Users?filter=userName%20eq%20%22{name}%22')[2]
    assert found["totalResults"] == 1
    winner = next(body for status, _, body in answers if status == 201)
    assert found["Resources"][0]["id"] == winner["id"]


def test_concurrent_creates_of_one_group_name_give_one_201(daemon: Daemon) -> None:
    answers = all_at_once(20, lambda i: call(daemon, "POST", "/scim/v2/Groups", {"displayName": "racing-group"}))
    assert statuses(answers) == [201] + [409] * 19
    assert_errors(answers, 409, "uniqueness")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_concurrent_if_match_writes_have_exactly_one_winner(daemon: Daemon, method: str) -> None:
    user = create(daemon, "/scim/v2/Users", {"userName": f"versioned-{method}", "title": "start"})
    url, version = f"/scim/v2/Users/{user['id']}", user["meta"]["version"]

    def write(i: int) -> Answer:
        body = ({"userName": f"versioned-{method}", "title": f"writer-{i}"} if method == "PUT"
                else {"schemas": [PATCH_URN], "Operations": [{"op": "replace", "path": "title", "value": f"writer-{i}"}]})
        return call(daemon, method, url, body, {"If-Match": version})

    answers = all_at_once(12, write)
    assert statuses(answers) == [200] + [412] * 11
    assert_errors(answers, 412, "invalidVers")
    winner = next(body for status, _, body in answers if status == 200)
    current = call(daemon, "GET", url)[2]
    assert current["title"] == winner["title"]
    assert current["meta"]["version"] == winner["meta"]["version"] != version


def test_concurrent_if_match_deletes_have_exactly_one_winner(daemon: Daemon) -> None:
    group = create(daemon, "/scim/v2/Groups", {"displayName": "doomed"})
    url, version = f"/scim/v2/Groups/{group['id']}", group["meta"]["version"]
    answers = all_at_once(10, lambda i: call(daemon, "DELETE", url, headers={"If-Match": version}))
    # The losers find the group gone (404) or, if they read it first, never a second 204.
    assert statuses(answers)[0] == 204 and set(statuses(answers)[1:]) <= {404, 412}
    assert call(daemon, "GET", url)[0] == 404


def test_concurrent_membership_patches_lose_nothing(daemon: Daemon) -> None:
    members = [create(daemon, "/scim/v2/Users", {"userName": f"member-{i}"})["id"] for i in range(50)]
    group = create(daemon, "/scim/v2/Groups", {"displayName": "busy"})
    url = f"/scim/v2/Groups/{group['id']}"
    answers = all_at_once(50, lambda i: call(daemon, "PATCH", url, {"schemas": [PATCH_URN], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": members[i]}]}]}))
    assert set(statuses(answers)) <= {200, 204}, statuses(answers)
    stored = call(daemon, "GET", url)[2]
    assert sorted(m["value"] for m in stored["members"]) == sorted(members)
    # And removing them all concurrently leaves none behind.
    answers = all_at_once(50, lambda i: call(daemon, "PATCH", url, {"schemas": [PATCH_URN], "Operations": [
        {"op": "remove", "path": f'members[value eq "{members[i]}"]'}]}))
    assert set(statuses(answers)) <= {200, 204}, statuses(answers)
    assert not call(daemon, "GET", url)[2].get("members")


def test_deleting_users_while_they_are_added_leaves_no_dangling_member(daemon: Daemon) -> None:
    """Each add either finds its user (and the delete then removes the membership) or fails with
    400: a group never points at a user that does not exist."""
    users = [create(daemon, "/scim/v2/Users", {"userName": f"fleeting-{i}"})["id"] for i in range(20)]
    group = create(daemon, "/scim/v2/Groups", {"displayName": "fleeting"})
    url = f"/scim/v2/Groups/{group['id']}"

    def work(i: int) -> Answer:
        user = users[i // 2]
        if i % 2:
            return call(daemon, "DELETE", f"/scim/v2/Users/{user}")
        return call(daemon, "PATCH", url, {"schemas": [PATCH_URN], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": user}]}]})

    answers = all_at_once(40, work)
    assert set(statuses(answers)) <= {200, 204, 400}, statuses(answers)
    assert_errors(answers, 400, "invalidValue")
    assert not call(daemon, "GET", url)[2].get("members")


def test_mixed_concurrent_traffic_never_answers_500(daemon: Daemon) -> None:
    """Creates, reads, searches, renames into each other's names and deletes, all at once."""
    ids = [create(daemon, "/scim/v2/Users", {"userName": f"mixed-{i}"})["id"] for i in range(10)]

    def work(i: int) -> Answer:
        target = f"/scim/v2/Users/{ids[i % 10]}"
        match i % 6:
            case 0:
                return call(daemon, "POST", "/scim/v2/Users", {"userName": f"mixed-{i % 4}"})
            case 1:
                return call(daemon, "PATCH", target, {"schemas": [PATCH_URN], "Operations": [
                    {"op": "replace", "path": "userName", "value": f"mixed-{(i + 1) % 10}"}]})
            case 2:
                return call(daemon, "GET", "/scim/v2/Users?filter=userName%20sw%20%22mixed%22&sortBy=userName")
            case 3:
                return call(daemon, "DELETE", target)
            case 4:
                return call(daemon, "PUT", target, {"userName": f"mixed-renamed-{i}"})
            case _:
                return call(daemon, "POST", "/scim/v2/Bulk", {
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
                        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": f"mixed-{i % 3}"}},
                        {"method": "DELETE", "path": f"/Users/{ids[(i + 3) % 10]}"}]})

    answers = all_at_once(60, work)
    assert max(statuses(answers)) < 500, statuses(answers)
    assert set(statuses(answers)) <= {200, 201, 204, 404, 409}, statuses(answers)
