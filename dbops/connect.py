"""Reaching the database: wait for a freshly created server, fail at once on what waiting cannot fix."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import psycopg

from dbops.errors import DbopsError
from dbops.urls import DatabaseUrl

Progress = Callable[[str], None]

APPLICATION_NAME = "gaia-db-release"
FIRST_DELAY = 0.25  # seconds before the first retry; doubles up to MAX_DELAY
MAX_DELAY = 2.0
ATTEMPT_TIMEOUT = 10  # libpq connect_timeout per attempt (it treats values below 2 as 2)

TIMED_OUT = "the connection attempt timed out"
# libpq / psycopg messages that a new or restarting server (or its DNS record) outgrows, and the short reason
# we report. Connection errors carry no SQLSTATE in psycopg, so the text is all there is to go on.
_TRANSIENT: tuple[tuple[str, str], ...] = (
    ("connection refused", "connection refused"),
    ("the database system is starting up", "the server is starting up"),
    ("the database system is not yet accepting connections", "the server is starting up"),
    ("the database system is not accepting connections", "the server is not accepting connections"),
    ("the database system is shutting down", "the server is shutting down"),
    ("the database system is in recovery mode", "the server is in recovery"),
    ("failed to resolve host", "the host name does not resolve (yet)"),
    ("could not translate host name", "the host name does not resolve (yet)"),
    ("temporary failure in name resolution", "the host name does not resolve (yet)"),
    ("no such file or directory", "the server socket does not exist (yet)"),
    ("timeout expired", TIMED_OUT),
    ("server closed the connection unexpectedly", "the server closed the connection"),
    ("connection reset by peer", "the server closed the connection"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "the network is unreachable"),
    ("too many clients already", "the server has too many connections"),
)


def transient_reason(message: str) -> str | None:
    """The short reason to report if `message` is a connection error worth retrying, else None."""
    lowered = message.lower()
    for needle, reason in _TRANSIENT:
        if needle in lowered:
            return reason
    return None


def _permanent_error(target: DatabaseUrl, message: str) -> DbopsError:
    lowered = message.lower()
    where = target.location
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        return DbopsError(
            f"PostgreSQL at {where} rejected the password for user {target.user!r}; check the credentials"
        )
    if "database" in lowered and "does not exist" in lowered:
        return DbopsError(f"database {target.database!r} does not exist on {where}; create it or fix the URL")
    if "role" in lowered and "does not exist" in lowered:
        return DbopsError(f"role {target.user!r} does not exist on {where}; check the user name in the URL")
    if "pg_hba.conf" in lowered:
        return DbopsError(f"PostgreSQL at {where} does not allow this connection (pg_hba.conf); allow the client host")
    # libpq messages never contain the password; keep the server's own words, first line only.
    detail = message.split("failed:", 1)[-1].replace("FATAL:", "").strip().splitlines()[0].strip()
    if "certificate" in lowered or "does not match host name" in lowered:
        return DbopsError(
            f"PostgreSQL at {where} was not verified ({detail}); the URL's sslrootcert (or PGSSLROOTCERT) must hold "
            "the stack's caCertificate and the host must be the database's own name (docs/tls.md)"
        )
    return DbopsError(f"could not connect to PostgreSQL at {where}: {detail}")


def url_refused(target: DatabaseUrl) -> DbopsError:
    """libpq refused the connection parameters themselves. Its message quotes them (the password too): not shown."""
    return DbopsError(
        f"libpq could not use the database URL for {target.location}; check its percent-escapes and query "
        "parameters (use postgresql://user:password@host:port/database?sslmode=require)"
    )


def connect(
    target: DatabaseUrl,
    *,
    wait_seconds: float,
    progress: Progress | None = None,
    autocommit: bool = True,
) -> psycopg.Connection[tuple[object, ...]]:
    """Connect to `target` (parsed once by the caller, `dbops.urls.parse_url`), retrying what a starting server
    outgrows with capped exponential backoff until `wait_seconds`."""
    conninfo = target.conninfo
    deadline = time.monotonic() + wait_seconds
    delay = FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            return psycopg.connect(
                conninfo,
                autocommit=autocommit,
                connect_timeout=max(2, min(ATTEMPT_TIMEOUT, int(remaining) + 1)),
                application_name=APPLICATION_NAME,
            )
        except psycopg.OperationalError as exc:
            message = str(exc)
            reason = transient_reason(message)
            if reason is None:
                raise _permanent_error(target, message) from None
        except (psycopg.ProgrammingError, psycopg.InterfaceError):
            raise url_refused(target) from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DbopsError(
                f"could not reach PostgreSQL at {target.location} within {wait_seconds:g} s ({reason}); "
                "check that the server is running and reachable, or give it longer to start"
            )
        if progress and attempt == 1:
            progress(f"waiting for PostgreSQL at {target.location} ({reason})")
        # Jitter keeps concurrent releases from knocking in step.
        time.sleep(min(remaining, delay * random.uniform(0.8, 1.2)))  # noqa: S311 - not for security
        delay = min(MAX_DELAY, delay * 2)
