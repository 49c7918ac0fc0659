"""The Looking Glass's cost as CPU time per request, in-process, without HTTP.

Throughput A/B over HTTP on a shared 2-core machine moves by more than the 5% it is meant to
resolve; CPU time of the calling thread (time.thread_time) does not count what other processes
do. Two WSGI apps (SCIM_LOOKING_GLASS true and false) over one Store take alternating batches
of the same requests, in ABBA order; the medians are compared.
"""

from __future__ import annotations

import gc
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import ops
from bench.load import Request, substitute
from bench.seed import Manifest


def wsgi_environ(request: Request, token: str, uniq: str) -> dict[str, Any]:
    """The environ a WSGI server would hand the app for `request`, with `uniq` for its @@UNIQ@@."""
    url = urlsplit(str(substitute(request.path, uniq)))
    body = substitute(request.body, uniq) if request.body else b""
    assert isinstance(body, bytes)
    return {
        "REQUEST_METHOD": request.method, "SCRIPT_NAME": "", "PATH_INFO": url.path, "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8080", "HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_USER_AGENT": "bench",
        **({"CONTENT_TYPE": "application/scim+json", "CONTENT_LENGTH": str(len(body))} if body else {}),
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def looking_glass_cpu(data_dir: Path, manifest: Manifest, batch: int = 400, rounds: int = 8) -> dict[str, Any]:
    """{op: {on_us, off_us, overhead}} for GET /Users/{id} and POST /Users."""
    from scimd.app import create_app
    from scimd.config import load
    from scimd.server import freeze_startup_heap
    from scimd.store import Store

    token = "inproc-token"
    store = Store(data_dir / "scim.db")
    apps = {mode: create_app(load({"SCIM_DATA_DIR": str(data_dir), "SCIM_API_TOKEN": token,
                                   "SCIM_LOOKING_GLASS": mode}), store) for mode in ("true", "false")}
    freeze_startup_heap()  # as `scimd serve` does before it accepts: the collector's work is the daemon's
    statuses: set[str] = set()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.add(status[:3])
        return lambda data: None

    out: dict[str, Any] = {"batch": batch, "rounds": rounds}
    try:
        for name in ("get_user", "post_user"):
            requests = ops.requests_for(name, manifest, "/scim/v2")
            times: dict[str, list[float]] = {"true": [], "false": []}
            serial = 0
            for r in range(rounds):
                for mode in (("true", "false") if r % 2 == 0 else ("false", "true")):
                    environs = []
                    for k in range(batch):
                        serial += 1
                        environs.append(wsgi_environ(requests[serial % len(requests)], token, f"cpu-{time.time_ns()}-{serial}"))
                    app = apps[mode]
                    began = time.thread_time()
                    for environ in environs:
                        result = app(environ, start_response)
                        b"".join(result)
                        getattr(result, "close", lambda: None)()
                    times[mode].append((time.thread_time() - began) / batch * 1e6)
            on, off = statistics.median(times["true"]), statistics.median(times["false"])
            out[name] = {"on_us": round(on, 1), "off_us": round(off, 1), "overhead": round((on - off) / off, 3)}
    finally:
        gc.unfreeze()
        store.close()
    out["statuses"] = sorted(statuses)
    return out
