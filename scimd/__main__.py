"""Command line: `scimd [serve]`, `scimd check-config`, `scimd token`, and the admin commands.

Every command reads the same SCIM_* / SHOWCASE_* environment and exits 0 on success, 1 on a
failure of the work, 2 on bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import Callable, Sequence

import orjson

from scimd import __version__, admin
from scimd.config import ConfigError, load
from scimd.logs import setup_logging

log = logging.getLogger("scimd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = getattr(args, "run", cmd_serve)
    try:
        return command(args)
    except ConfigError as exc:
        print(f"scimd: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scimd", description="A SCIM 2.0 server (RFC 7643/7644) on SQLite.")
    parser.add_argument("--version", action="version", version=f"scimd {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.add_parser("serve", help="run the server (the default)").set_defaults(run=cmd_serve)
    commands.add_parser("check-config", help="validate the environment and print the effective configuration"
                        ).set_defaults(run=cmd_check_config)
    commands.add_parser("token", help="print a new strong random API token").set_defaults(run=cmd_token)
    admin.register(commands)
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load()
    print(orjson.dumps(config.masked(), option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(32))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from scimd.app import ScimApp, with_looking_glass
    from scimd.server import serve
    from scimd.store import StorageError, Store

    config = load()
    setup_logging(config.log_level, sys.stderr)
    if not config.auth_enabled:
        log.warning("WARNING: SCIM_API_TOKEN is not set: the SCIM API is open to anyone who can reach this port")
    try:
        admin.make_data_dir(config)
        # Held for the life of the process: a second daemon, or a restore, on this directory is refused.
        lock = admin.lock_data_dir(config.data_dir)
        store = Store(config.database_path)
    except (OSError, StorageError, admin.DataDirInUse) as exc:
        print(f"scimd: cannot open the data directory: {exc}", file=sys.stderr)
        return EXIT_FAILED
    scim = ScimApp(config, store)
    app = with_looking_glass(scim, config)
    try:
        return serve(app, config, on_reload=scim.reload_tokens, on_stopping=app.shutdown, on_stop=store.close)
    finally:
        os.close(lock)


if __name__ == "__main__":
    raise SystemExit(main())
