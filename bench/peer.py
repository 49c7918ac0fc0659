"""The peer: scim2-server (python-scim's reference server, PyPI), in memory.

It is built as its `scim2-server` command builds it (RFC 7643 default schemas, resource types
and service provider configuration, a static bearer token), seeded through its own service
and storage (the parse an HTTP POST takes, then what InMemoryStorage.create() stores, without HTTP), with the same
users, ids and groups as scimd, and served by the same waitress server, adjustments and thread
count as scimd (scimd.server.build_server) instead of its command's wsgiref server (one thread
per request, HTTP/1.0), so the comparison is of the applications, not of the HTTP stacks.

    python -m bench.peer --port 8082 --threads 16 --users 100000 --token T
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from bench.seed import generate, group_body, group_plan, spare_users


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version
        return dist_version("scim2-server")
    except Exception:  # noqa: BLE001 - not installed
        return None


def build(users: int, token: str, log: Any = print) -> tuple[Any, float]:
    """The peer WSGI app holding `users` users (+ spare) and the seed's groups; (app, seconds)."""
    from scim2_models import Meta, ScimProvider
    from scim2_server.memory import InMemoryStorage
    from scim2_server.service import ScimService
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
    from scim2_server.utils import (
        load_default_resource_types, load_default_schemas, load_default_service_provider_config,
    )

    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(load_default_schemas().values(), load_default_resource_types().values(),
                                           config=config)
    service = ScimService(provider, secret="bench-" + "0" * 32)
    storage = InMemoryStorage()
    app = BearerTokenApplication(storage, provider, service=service, bearer_tokens=[token])
    started = time.perf_counter()
    user_type, group_type = service.resource_type_at("/Users"), service.resource_type_at("/Groups")

    def create(resource_type: Any, rid: str, body: dict[str, Any]) -> None:
        # What storage.create() does, minus its two deep copies and uniqueness check (the seed is
        # unique), and with the seed's id so both servers get the same requests.
        resource = service.read_creation(resource_type, json.dumps(body).encode(), "application/scim+json")
        resource.id = rid
        stamp = storage.clock()
        resource.meta = Meta(resource_type=resource_type.name, created=stamp, last_modified=stamp,
                             version=storage.next_version())
        storage._store(resource, storage._values_of(resource))

    ids: list[str] = []
    with provider:
        for i, (rid, body) in enumerate(generate(users)):
            create(user_type, rid, body)
            ids.append(rid)
            if (i + 1) % 20_000 == 0:
                log(f"peer seed: {i + 1:,} users ({time.perf_counter() - started:.0f} s)")
        for rid, body in spare_users(users):
            create(user_type, rid, body)
        for gid, name, members in group_plan(ids):
            create(group_type, gid, {**group_body(name), "members": [{"value": m} for m in members]})
    return app, time.perf_counter() - started


def main() -> int:
    from scimd.config import Config
    from scimd.server import build_server

    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=Config.threads)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    app, seconds = build(args.users, args.token, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"peer seeded {args.users:,} users in {seconds:.1f} s", file=sys.stderr, flush=True)
    server = build_server(app, Config(host="127.0.0.1", port=args.port, threads=args.threads))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
