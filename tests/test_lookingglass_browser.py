"""The Looking Glass viewer end to end in headless Chromium: token prompt, live rows, detail.

The server under test comes from the one `server` fixture; everything else talks to it over
HTTP only, so pointing that fixture at the real scimd app changes nothing below it.
"""

from __future__ import annotations

import shutil
import threading
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import orjson
import pytest
from werkzeug.wrappers import Request, Response

from scimd import schema, trace
from scimd.config import Config
from scimd.lookingglass_http import LookingGlass

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-3f9a1c"
PASSWORD = "Tr0ub4dor&3-browser"


@dataclass(frozen=True)
class Server:
    base_url: str
    token: str


def stub_scim_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Just enough SCIM for the requests below, noting decisions the way the core does."""
    request = Request(environ)
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return Response(b'{"status":"401"}', 401, mimetype="application/scim+json")(environ, start_response)
    document = orjson.loads(request.get_data()) if request.get_data() else {}
    status, body = 200, {"schemas": [schema.USER_URN], "id": "2819c223", "userName": "bjensen"}
    if request.method == "POST":
        status, body = 201, {**{k: v for k, v in document.items() if k != "password"}, "id": "2819c223"}
    elif request.method == "PATCH":
        for op in document["Operations"]:
            trace.note("patch", op=op["op"], path=op.get("path"), before="Barbara", after=op.get("value"))
        body["displayName"] = "Babs"
    elif "filter" in request.args:
        trace.note("filter", tree=request.args["filter"], sql="SELECT id FROM resources WHERE user_name_key = ?",
                   params=["bjensen"])
        body = {"schemas": [schema.LIST_RESPONSE_URN], "totalResults": 1, "Resources": [body]}
    return Response(orjson.dumps(body), status, mimetype="application/scim+json",
                    headers={"X-Request-Id": "stub"})(environ, start_response)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The one place that decides what runs: a waitress server on a free port."""
    waitress = pytest.importorskip("waitress")
    app = LookingGlass(stub_scim_app, Config(api_tokens=(TOKEN,)),
                       lambda environ: environ.get("HTTP_AUTHORIZATION") == f"Bearer {TOKEN}")
    httpd = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=httpd.run, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.effective_port}", TOKEN)
    finally:
        app.shutdown()  # open streams end now instead of holding worker threads for a minute
        httpd.task_dispatcher.shutdown()  # let workers finish writing before the sockets close
        httpd.close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def scim(server: Server, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{server.base_url}/scim/v2{path}", method=method,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/scim+json",
                 "User-Agent": "Okta SCIM Client 1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read() or b"null")


def test_viewer_shows_live_exchanges_and_their_detail(server: Server, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{server.base_url}/looking-glass/")
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)  # asks for the token first
    page.fill("#token", server.token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#status.status-live", timeout=10_000)
    assert page.evaluate("sessionStorage.length") == 1 and page.evaluate("localStorage.length") == 0

    created = scim(server, "POST", "/Users", {"schemas": [schema.USER_URN], "userName": "bjensen",
                                              "password": PASSWORD, "name": {"givenName": "Barbara"}})
    scim(server, "PATCH", f"/Users/{created['id']}", {"schemas": [schema.PATCH_OP_URN], "Operations": [
        {"op": "replace", "path": "displayName", "value": "Babs"}]})
    scim(server, "GET", "/Users?filter=userName%20eq%20%22bjensen%22")
    # Locator waits, not wait_for_function: its polling evals a string, which the viewer's CSP forbids.
    page.wait_for_selector("#rows tr:nth-child(3)", timeout=10_000)
    assert PASSWORD not in page.content()

    page.click("#rows tr:has(.m-post)")
    page.wait_for_selector("#detail:not([hidden])")
    assert "bjensen" in page.inner_text("#d-req") and "[redacted]" in page.inner_text("#d-req")
    assert created["id"] in page.inner_text("#d-resp")
    assert PASSWORD not in page.content()

    page.click("#rows tr:has(.m-patch)")
    patch = page.inner_text(".decision-patch").lower()  # headings are upper-cased by CSS
    assert "before" in patch and "after" in patch and "babs" in patch

    page.click("#rows tr:has(.m-get) >> nth=0")
    found = page.inner_text(".decision-filter").lower()
    assert "bjensen" in found and "sql" in found and "?" in found

    page.select_option("#f-method", "PATCH")
    assert page.locator("#rows tr").count() == 1
    page.select_option("#f-method", "")
    assert page.locator("#rows tr").count() >= 3
    # Only the viewer's first, token-less probe may fail; a CSP violation or script error would show here.
    assert [p for p in problems if "status of 401" not in p] == [] and len(problems) <= 1
    page.close()
