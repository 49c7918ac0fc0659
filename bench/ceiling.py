"""The ceiling: a WSGI app that does no work, served exactly as scimd is served.

It reads the request body, then answers with the status and a body of the size scimd gave for
the same operation (set before each run through POST /__bench/shape). It runs under
scimd.server.build_server, the same waitress server, adjustments and thread count as the
daemon, so the ratio scimd/ceiling is the share of the HTTP stack's capacity that scimd's own
work leaves: a property of the code, not of the machine.

    python -m bench.ceiling --port 8081 --threads 16
"""

from __future__ import annotations

import argparse
import threading
from typing import Any, Callable, Iterable

import orjson

from scimd.config import Config
from scimd.server import build_server

SHAPE_PATH = "/__bench/shape"
_REASONS = {200: "200 OK", 201: "201 Created", 204: "204 No Content", 404: "404 Not Found"}


class Ceiling:
    def __init__(self) -> None:
        self.status = "200 OK"
        self.body = b"{}"
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = environ["wsgi.input"].read(length) if length else b""
        if environ.get("PATH_INFO") == SHAPE_PATH:
            shape = orjson.loads(data)
            with self.lock:
                self.status = _REASONS.get(shape["status"], f"{shape['status']} X")
                self.body = b"x" * int(shape["size"])
            start_response("204 No Content", [])
            return [b""]
        status, body = self.status, self.body
        headers = [("Content-Type", "application/scim+json; charset=utf-8")]
        if status.startswith("204"):
            start_response(status, headers)
            return [b""]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=Config.threads)
    args = parser.parse_args()
    config = Config(host="127.0.0.1", port=args.port, threads=args.threads)
    server = build_server(Ceiling(), config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
