"""`python -m dbops <command>`: thin wrappers; expected failures print `error: <sentence>` and exit 1."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from dbops.errors import DbopsError
from dbops.names import ENVIRONMENTS, SERVICES

EXIT_ERROR = 1


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _env(name: str) -> str | None:
    """An environment variable, with empty meaning unset."""
    return os.environ.get(name) or None


def _role_passwords() -> dict[str, object] | None:
    raw = _env("GAIA_DB_ROLE_PASSWORDS")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None  # the decoder's message quotes the input, which holds secrets
    if not isinstance(value, dict):
        raise DbopsError(
            f"GAIA_DB_ROLE_PASSWORDS must be a JSON object mapping services ({', '.join(SERVICES)}) to passwords"
        )
    return value


def cmd_release(args: argparse.Namespace) -> int:
    from dbops.release import release  # the heavy imports (Alembic, SQLAlchemy) only for commands that need them

    url = _env("DATABASE_URL")
    if url is None:
        raise DbopsError("set DATABASE_URL to the admin URL of the database, e.g. postgresql://user:pw@host:5432/db")
    result = release(
        url,
        environment=args.environment,
        admin_email=args.admin_email,
        role_passwords=_role_passwords(),  # type: ignore[arg-type]  # validated by release()
        admin_api_key=_env("GAIA_DB_ADMIN_API_KEY"),
        wait_seconds=args.wait,
        progress=_progress,
    )
    output: dict[str, object] = {"revision": result.revision, "serviceUrls": result.service_urls}
    if result.admin_api_key is not None:
        output["adminApiKey"] = result.admin_api_key
    print(json.dumps(output))
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def parser() -> argparse.ArgumentParser:
    from dbops.release import DEFAULT_WAIT

    top = argparse.ArgumentParser(prog="python -m dbops", description="gaia-db database operations")
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    rel = commands.add_parser(
        "release",
        help="bring DATABASE_URL to the current schema, roles and admin seed; print JSON",
        description="Reads DATABASE_URL, GAIA_DB_ROLE_PASSWORDS (JSON) and GAIA_DB_ADMIN_API_KEY from the "
        "environment; missing passwords and key are generated. Prints {revision, serviceUrls[, adminApiKey]}.",
    )
    rel.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    rel.add_argument("--admin-email", required=True)
    rel.add_argument(
        "--wait",
        type=_positive_seconds,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help=f"how long to wait for the database to accept connections (default {DEFAULT_WAIT:g})",
    )
    rel.set_defaults(handler=cmd_release)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except DbopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
