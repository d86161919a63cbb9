"""Helpers a migration revision calls to change a table while the application keeps using it.

`create_index_concurrently` is the discipline for `CREATE INDEX CONCURRENTLY`:

- Its lock waits (the table's SHARE UPDATE EXCLUSIVE lock, then every transaction that could still see old rows)
  get a short `lock_timeout` and are retried, so one idle application transaction costs a progress line naming it
  (pid, age, application_name) every few seconds, not a silent four-hour stall; only the build itself gets the long
  statement timeout. After LOCK_WAIT_SECONDS of retries it gives up with one sentence naming the blocker.
- The session checks its client every few seconds while a statement runs (`client_connection_check_interval`), so a
  release that is killed does not leave its build running on the server.
- A build that a killed release did leave running (an older server, or a kill between checks) is found in
  `pg_stat_progress_create_index`: while it is still waiting for locks it holds nothing useful and is cancelled;
  while it is building, the release waits for it. Either way the release never collides with it.

The migration session runs as the NOLOGIN owner role; the catalog views that show other sessions (and cancelling the
left-over build, which belongs to the admin login) need the login user, so those queries run after RESET ROLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dbops.connect import APPLICATION_NAME
from dbops.errors import DbopsError
from dbops.names import OWNER_ROLE

Progress = Callable[[str], None]

BUILD_LOCK_TIMEOUT = "10s"  # each lock wait of the build, retried
BUILD_TIMEOUT = "4h"  # the build itself: a concurrent build scans the table twice
LOCK_WAIT_SECONDS = 900.0  # how long to keep retrying for locks before giving up
RETRY_PAUSE = 2.0
ORPHAN_POLL = 2.0
CLIENT_CHECK = "5s"


def _quiet(_message: str) -> None:
    pass


def _sql(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> Any:
    return conn.execute(text(statement), params or {})


def _is_lock_timeout(exc: DBAPIError) -> bool:
    return isinstance(exc.orig, psycopg.errors.LockNotAvailable)


def _as_login(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    _sql(conn, "RESET ROLE")
    try:
        return list(_sql(conn, statement, params).fetchall())
    finally:
        _sql(conn, f"SET ROLE {OWNER_ROLE}")


def blockers(conn: Connection) -> str:
    """The open transactions in this database a concurrent build waits for, oldest first, for messages."""
    rows = _as_login(
        conn,
        "SELECT pid, coalesce(nullif(application_name, ''), 'no application_name'), coalesce(state, 'unknown'), "
        "round(extract(epoch FROM now() - xact_start)) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
        "AND backend_type = 'client backend' ORDER BY xact_start LIMIT 3",
    )
    if not rows:
        return "a lock held by another session"
    return ", ".join(
        f"pid {pid} ({application}, {state}, transaction open for {int(age)} s)"
        for pid, application, state, age in rows
    )


def _orphan_builds(conn: Connection, table: str) -> list[Any]:
    """Index builds on `table` by other sessions of a gaia-db release (we hold the release lock: left by a killed
    one), with their phase and block counts."""
    return _as_login(
        conn,
        "SELECT p.pid, p.phase, p.blocks_done, p.blocks_total FROM pg_catalog.pg_stat_progress_create_index p "
        "JOIN pg_catalog.pg_stat_activity a ON a.pid = p.pid "
        "WHERE p.datname = current_database() AND p.pid <> pg_backend_pid() AND p.relid = to_regclass(:table) "
        "AND a.application_name = :app",
        {"table": f"public.{table}", "app": APPLICATION_NAME},
    )


def settle_orphan_builds(conn: Connection, table: str, progress: Progress) -> None:
    """Cancel a left-over build that is waiting for locks; wait for one that is building. Returns when none is left."""
    told: set[tuple[int, str]] = set()
    while True:
        rows = _orphan_builds(conn, table)
        if not rows:
            return
        for pid, phase, done, total in rows:
            if str(phase).startswith("waiting"):
                _as_login(conn, "SELECT pg_cancel_backend(:pid)", {"pid": pid})
                if (pid, "cancel") not in told:
                    progress(f"cancelled the index build on {table} that a killed release left waiting "
                             f"(pid {pid}, {phase})")
                    told.add((pid, "cancel"))
            elif (pid, str(phase)) not in told:
                blocks = f", {done} of {total} blocks" if total else ""
                progress(f"waiting for the index build on {table} that a killed release left running "
                         f"(pid {pid}, {phase}{blocks})")
                told.add((pid, str(phase)))
        time.sleep(ORPHAN_POLL)


def _index_state(conn: Connection, name: str) -> bool | None:
    """True: a valid index `name`; False: an invalid one (a failed or cancelled build); None: none."""
    row = _sql(
        conn,
        "SELECT i.indisvalid FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = :name AND c.relnamespace = 'public'::regnamespace",
        {"name": name},
    ).fetchone()
    return None if row is None else bool(row[0])


def create_index_concurrently(
    conn: Connection,
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    progress: Progress | None = None,
    restore_settings: Sequence[str] = (),
) -> None:
    """Build `name` on `table` (`columns`) concurrently, in an autocommit block (see the module docstring).

    A valid index of that name is kept; an invalid leftover is dropped (concurrently) first. `restore_settings` are
    the session's statements to run afterwards (its usual lock and statement timeouts).
    """
    say = progress or _quiet
    quoted_columns = ", ".join(f'"{column}"' for column in columns)
    build = f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON public."{table}" ({quoted_columns})'
    drop = f'DROP INDEX CONCURRENTLY IF EXISTS public."{name}"'
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    try:
        _sql(conn, f"SET lock_timeout = '{BUILD_LOCK_TIMEOUT}'")
        _sql(conn, f"SET statement_timeout = '{BUILD_TIMEOUT}'")
        # One core for the build: parallel maintenance workers would take every core from the application's queries.
        _sql(conn, "SET max_parallel_maintenance_workers = 0")
        if conn.dialect.server_version_info and conn.dialect.server_version_info >= (14,):
            _sql(conn, f"SET client_connection_check_interval = '{CLIENT_CHECK}'")
        while True:
            settle_orphan_builds(conn, table, say)
            try:
                if _index_state(conn, name) is False:
                    say(f"dropping the invalid index {name} a failed build left behind")
                    _sql(conn, drop)
                if _index_state(conn, name) is None:
                    say(f"building index {name} on {table} concurrently")
                    _sql(conn, build)
                if _index_state(conn, name):
                    return
            except DBAPIError as exc:
                if not _is_lock_timeout(exc):
                    raise
            waiting_for = blockers(conn)
            if time.monotonic() >= deadline:
                raise DbopsError(
                    f"building index {name} gave up after {LOCK_WAIT_SECONDS:g} s of waiting for {waiting_for}; "
                    "end that transaction (services' idle ones end after idle_in_transaction_session_timeout) and "
                    "run the release again"
                )
            say(f"index {name} waits for {waiting_for}; retrying")
            time.sleep(RETRY_PAUSE)
    finally:
        for statement in (*restore_settings, "RESET max_parallel_maintenance_workers",
                          "RESET client_connection_check_interval"):
            _sql(conn, statement)
