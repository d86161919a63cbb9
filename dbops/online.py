"""Helpers a migration revision calls to change a table while the application keeps using it.

A revision calls them through `steps()`, which leaves Alembic's per-revision transaction (an autocommit block) and
runs each step in transactions of its own:

    from dbops import online

    def upgrade() -> None:
        with online.steps() as db:
            db.add_column("chat_messages", "content_chars", "integer")
            db.backfill("chat_messages", "content_chars = length(content)", pending="content_chars IS NULL")
            db.add_not_null("chat_messages", "content_chars")

The lock discipline (GitLab's `with_lock_retries`, strong_migrations):

- Every step that needs a lock the application's writes conflict with (ACCESS EXCLUSIVE, SHARE ROW EXCLUSIVE) runs
  in a short transaction with a short `lock_timeout` (`RETRY.timeouts_ms`, growing slowly). While a DDL statement
  waits for its lock, every write to the table queues behind it, so the wait must be short. A lock timeout aborts the
  whole transaction, so the *transaction* is rolled back and retried, after a pause that backs off with jitter; each
  retry says which sessions hold locks on the tables (pid, application_name, how long their transaction has been
  open). After `RETRY.give_up_after` seconds it fails with one sentence naming the blocker.
- Work that scans a table (VALIDATE CONSTRAINT, CREATE INDEX CONCURRENTLY) runs under SHARE UPDATE EXCLUSIVE, which
  writes do not conflict with: its lock waits get `BUILD_LOCK_TIMEOUT` (retried the same way), only the scan the
  long `BUILD_TIMEOUT`.
- Every step is idempotent (a constraint or index that exists and is valid is kept, a column that is already NOT
  NULL stays), so a release that was killed half-way runs the revision again and finishes it.

`create_index_concurrently` also:
- checks its client every few seconds while a statement runs (`client_connection_check_interval`), so a release
  that is killed does not leave its build running on the server;
- finds a build that a killed release did leave running (an older server, or a kill between checks) in
  `pg_stat_progress_create_index`: while it is still waiting for locks it holds nothing useful and is cancelled;
  while it is building, the release waits for it. Either way the release never collides with it.

`backfill` updates rows in batches, each its own short transaction, pausing between batches and while a streaming
replica's replay lag exceeds a bound; it starts at the first row still to do, so a killed release resumes where it
left off.

In offline mode (`alembic upgrade --sql`, what squawk lints) `steps()` writes the same statements without the
retries, each step in its own BEGIN/COMMIT.

The migration session runs as the NOLOGIN owner role; the catalog views that show other sessions (and cancelling the
left-over build, which belongs to the admin login) need the login user, so those queries run after RESET ROLE.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from dbops.connect import APPLICATION_NAME
from dbops.errors import DbopsError

Progress = Callable[[str], None]
T = TypeVar("T")

BUILD_LOCK_TIMEOUT = "10s"  # each lock wait of a scan under SHARE UPDATE EXCLUSIVE (writes do not queue behind it)
BUILD_TIMEOUT = "4h"  # the scan itself: a concurrent build scans the table twice
LOCK_WAIT_SECONDS = 900.0  # how long an index build keeps retrying for locks before giving up
RETRY_PAUSE = 2.0  # the index build's pause between lock waits (jittered)
ORPHAN_POLL = 2.0
CLIENT_CHECK = "5s"
STEP_TIMEOUT = "1min"  # statement_timeout of a short step (DDL under a lock, one backfill batch)
LAG_POLL = 1.0  # seconds between looks at the replicas while a backfill waits for them
LAG_WAIT_SECONDS = 1800.0  # how long a backfill waits for a lagging replica before giving up
TELL_EVERY = 5.0  # seconds between progress lines of a long wait or a backfill
BACKFILL_SWEEPS = 3  # passes over the table before a backfill decides rows keep arriving unfilled


@dataclass(frozen=True)
class LockRetry:
    """How a short step waits for its lock: attempt n gets `timeouts_ms[n-1]` (the last one repeats), then a pause
    of `first_pause * 2**(n-1)` seconds (at most `max_pause`) times a random factor in 0.5..1.5."""

    timeouts_ms: tuple[int, ...] = (20, 20, 20, 20, 20, 50, 50, 100, 100, 200, 200, 500)
    first_pause: float = 0.1
    max_pause: float = 10.0
    give_up_after: float = 900.0

    def timeout_ms(self, attempt: int) -> int:
        return self.timeouts_ms[min(attempt, len(self.timeouts_ms)) - 1]

    def pause(self, attempt: int) -> float:
        base = min(self.max_pause, self.first_pause * 2.0 ** (attempt - 1))
        return float(base * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security


RETRY = LockRetry()


def _quiet(_message: str) -> None:
    pass


def _sql(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> Any:
    return conn.execute(text(statement), params or {})


def is_lock_timeout(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's or psycopg's) is PostgreSQL's lock_timeout (55P03)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(orig, psycopg.errors.LockNotAvailable)


def _is_lock_timeout(exc: DBAPIError) -> bool:
    return is_lock_timeout(exc)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def ident(name: str) -> str:
    """`name` double-quoted for SQL; only plain identifiers are accepted (a revision's names are constants)."""
    if not _IDENTIFIER.fullmatch(name):
        raise DbopsError(f"{name!r} is not a plain identifier (letters, digits, _ and $, at most 63)")
    return f'"{name}"'


def _columns(columns: Sequence[str]) -> str:
    return ", ".join(ident(column) for column in columns)


def _as_login(conn: Connection, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Run a catalog query as the login user (RESET ROLE), then go back to the role the session had."""
    row = _sql(conn, "SELECT current_user, session_user").fetchone()
    current, login = (str(row[0]), str(row[1])) if row else ("", "")
    _sql(conn, "RESET ROLE")
    try:
        return list(_sql(conn, statement, params).fetchall())
    finally:
        if current and current != login:
            _sql(conn, f"SET ROLE {ident(current)}")


def _describe_sessions(rows: Sequence[Any]) -> str:
    return ", ".join(
        f"pid {pid} ({application}, {state}, transaction open for {int(age)} s)"
        for pid, application, state, age in rows
    )


def blockers(conn: Connection) -> str:
    """The open transactions in this database a concurrent build waits for, oldest first, for messages."""
    rows = _as_login(
        conn,
        "SELECT pid, coalesce(nullif(application_name, ''), 'no application_name'), coalesce(state, 'unknown'), "
        "round(extract(epoch FROM now() - xact_start)) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
        "AND backend_type = 'client backend' ORDER BY xact_start LIMIT 3",
    )
    return _describe_sessions(rows) if rows else "a lock held by another session"


def lock_holders(conn: Connection, tables: Sequence[str] | None) -> str:
    """The sessions holding (or queued for) a lock on one of `tables` (None: on any table of this database), oldest
    transaction first, for messages."""
    on_tables = ("l.relation IN (SELECT to_regclass('public.' || quote_ident(t)) "
                 "FROM unnest(CAST(:tables AS text[])) t)") if tables is not None else "l.relation >= 16384"
    rows = _as_login(
        conn,
        "SELECT a.pid, coalesce(nullif(a.application_name, ''), 'no application_name'), coalesce(a.state, 'unknown'),"  # noqa: S608
        " round(extract(epoch FROM now() - coalesce(a.xact_start, a.query_start, a.backend_start))) "
        "FROM pg_catalog.pg_stat_activity a WHERE a.pid <> pg_backend_pid() AND a.pid IN ("
        " SELECT l.pid FROM pg_catalog.pg_locks l WHERE l.locktype = 'relation' "
        " AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
        f" AND {on_tables}) ORDER BY coalesce(a.xact_start, a.query_start, a.backend_start) LIMIT 3",
        {"tables": list(tables or ())},
    )
    if not rows:
        return "a session that has let go by now"
    return _describe_sessions(rows)


def _require_autocommit(conn: Connection) -> None:
    driver = conn.connection.driver_connection
    if not getattr(driver, "autocommit", False):
        raise DbopsError(
            "dbops.online steps manage their own transactions: call them inside `with online.steps() as db:` "
            "(an autocommit block), not in the revision's transaction"
        )


def with_lock_retries(
    conn: Connection,
    what: str,
    body: Callable[[Connection], T],
    *,
    tables: Sequence[str],
    progress: Progress | None = None,
    retry: LockRetry | None = None,
    lock_timeout: str | None = None,
    statement_timeout: str = STEP_TIMEOUT,
) -> T:
    """Run `body` in a transaction of its own with a short lock_timeout; on a lock timeout roll the transaction back,
    name the sessions holding locks on `tables`, pause (backoff + jitter) and run it again. `lock_timeout` fixes the
    timeout of every attempt (a scan under SHARE UPDATE EXCLUSIVE) instead of `retry`'s short, growing ones."""
    _require_autocommit(conn)
    policy = retry or RETRY
    say = progress or _quiet
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        timeout = lock_timeout or f"{policy.timeout_ms(attempt)}ms"
        _sql(conn, "BEGIN")
        try:
            _sql(conn, f"SET LOCAL lock_timeout = '{timeout}'")
            _sql(conn, f"SET LOCAL statement_timeout = '{statement_timeout}'")
            result = body(conn)
            _sql(conn, "COMMIT")
            return result
        except BaseException as exc:
            _sql(conn, "ROLLBACK")
            if not is_lock_timeout(exc):
                raise
        holders = lock_holders(conn, tables)
        waited = time.monotonic() - started
        pause = policy.pause(attempt)
        on = ", ".join(tables)
        if waited + pause > policy.give_up_after:
            raise DbopsError(
                f"{what} gave up after {attempt} attempts in {waited:.0f} s: it could not lock {on} within "
                f"{timeout} while {holders} held it; end that transaction and run the release again"
            )
        say(f"{what} could not lock {on} within {timeout} (held by {holders}); rolled back attempt {attempt}, "
            f"retrying in {pause:.1f} s")
        time.sleep(pause)


# --- index builds ------------------------------------------------------------------------------------------------


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


def _settings(conn: Connection, names: Sequence[str]) -> list[str]:
    """SET statements that put `names` back to their current values."""
    restore = []
    for name in names:
        row = _sql(conn, "SELECT current_setting(:name, true)", {"name": name}).fetchone()
        if row is not None and row[0] is not None:
            restore.append(f"SET {name} = '{str(row[0]).replace(chr(39), chr(39) * 2)}'")
    return restore


def index_sql(name: str, table: str, columns: Sequence[str], *, unique: bool = False, where: str | None = None) -> str:
    return (f"CREATE {'UNIQUE ' if unique else ''}INDEX CONCURRENTLY IF NOT EXISTS {ident(name)} "
            f"ON public.{ident(table)} ({_columns(columns)})" + (f" WHERE {where}" if where else ""))


def create_index_concurrently(
    conn: Connection,
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    where: str | None = None,
    progress: Progress | None = None,
    restore_settings: Sequence[str] | None = None,
) -> None:
    """Build `name` on `table` (`columns`, optionally UNIQUE and partial) concurrently, in an autocommit block (see
    the module docstring).

    A valid index of that name is kept; an invalid leftover is dropped (concurrently) first. `restore_settings` are
    the session's statements to run afterwards; by default the lock and statement timeouts it had before.
    """
    say = progress or _quiet
    _require_autocommit(conn)
    build = index_sql(name, table, columns, unique=unique, where=where)
    drop = f"DROP INDEX CONCURRENTLY IF EXISTS public.{ident(name)}"
    restore = list(restore_settings) if restore_settings is not None else _settings(
        conn, ("lock_timeout", "statement_timeout"))
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    attempt = 0
    try:
        _sql(conn, f"SET lock_timeout = '{BUILD_LOCK_TIMEOUT}'")
        _sql(conn, f"SET statement_timeout = '{BUILD_TIMEOUT}'")
        # One core for the build: parallel maintenance workers would take every core from the application's queries.
        _sql(conn, "SET max_parallel_maintenance_workers = 0")
        if conn.dialect.server_version_info and conn.dialect.server_version_info >= (14,):
            _sql(conn, f"SET client_connection_check_interval = '{CLIENT_CHECK}'")
        while True:
            attempt += 1
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
            time.sleep(min(RETRY_PAUSE * 2 ** min(attempt - 1, 3), 10.0) * random.uniform(0.75, 1.25))  # noqa: S311
    finally:
        for statement in (*restore, "RESET max_parallel_maintenance_workers",
                          "RESET client_connection_check_interval"):
            _sql(conn, statement)


# --- constraints -------------------------------------------------------------------------------------------------


def _constraint(conn: Connection, table: str, name: str) -> bool | None:
    """True: `name` on `table` exists and is validated; False: exists NOT VALID; None: none."""
    row = _sql(
        conn,
        "SELECT convalidated FROM pg_catalog.pg_constraint WHERE conname = :name "
        "AND conrelid = to_regclass('public.' || quote_ident(:table))",
        {"name": name, "table": table},
    ).fetchone()
    return None if row is None else bool(row[0])


def _not_null(conn: Connection, table: str, column: str) -> bool:
    row = _sql(
        conn,
        "SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass('public.' || quote_ident(:t)) "
        "AND attname = :c AND NOT attisdropped",
        {"t": table, "c": column},
    ).fetchone()
    if row is None:
        raise DbopsError(f"column {column} does not exist in table {table}")
    return bool(row[0])


def _primary_key(conn: Connection, table: str) -> str:
    rows = _sql(
        conn,
        "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass('public.' || quote_ident(:t)) AND i.indisprimary",
        {"t": table},
    ).fetchall()
    if len(rows) != 1:
        raise DbopsError(f"table {table} has no single-column primary key; give backfill a unique, indexed key=")
    return str(rows[0][0])


def foreign_key_sql(name: str, table: str, columns: Sequence[str], ref_table: str, ref_columns: Sequence[str],
                    on_delete: str | None = None) -> str:
    if on_delete is not None and on_delete.upper() not in ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT",
                                                           "NO ACTION"):
        raise DbopsError(f"on_delete must be CASCADE, SET NULL, SET DEFAULT, RESTRICT or NO ACTION, not {on_delete!r}")
    return (f"ALTER TABLE public.{ident(table)} ADD CONSTRAINT {ident(name)} FOREIGN KEY ({_columns(columns)}) "
            f"REFERENCES public.{ident(ref_table)} ({_columns(ref_columns)})"
            + (f" ON DELETE {on_delete.upper()}" if on_delete else "") + " NOT VALID")


def check_sql(name: str, table: str, condition: str) -> str:
    return f"ALTER TABLE public.{ident(table)} ADD CONSTRAINT {ident(name)} CHECK ({condition}) NOT VALID"


def validate_sql(name: str, table: str) -> str:
    return f"ALTER TABLE public.{ident(table)} VALIDATE CONSTRAINT {ident(name)}"


def not_null_check_name(table: str, column: str) -> str:
    return f"{table}_{column}_not_null"[:63]


# --- replicas ----------------------------------------------------------------------------------------------------

# (replica name, replay lag in seconds or None when unknown); None overall: this login cannot see the replicas.
LagSource = Callable[[Connection], list[tuple[str, float | None]] | None]


def replica_lag(conn: Connection) -> list[tuple[str, float | None]] | None:
    """Each streaming replica's replay lag as the primary sees it (pg_stat_replication). A replica that has replayed
    everything it was sent has lag 0 (PostgreSQL clears replay_lag once a replica is idle). None when the login may
    not see the replicas' state (it needs pg_monitor or pg_read_all_stats, which RDS / Cloud SQL admins have)."""
    rows = _as_login(
        conn,
        "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text), state, "
        "extract(epoch FROM replay_lag)::float8, replay_lsn IS NOT NULL AND replay_lsn >= sent_lsn "
        "FROM pg_catalog.pg_stat_replication ORDER BY 1",
    )
    if any(state is None for _, state, _, _ in rows):
        return None
    return [(str(name), 0.0 if lag is None and caught_up else (None if lag is None else float(lag)))
            for name, _, lag, caught_up in rows]


_RULE = re.compile(r"[a-z]+(-[a-z]+)+")


def _lint_ignore(rule: str, reason: str) -> str:
    """The per-statement escape hatch's comment; a rule name and a reason of a few words are required."""
    if not _RULE.fullmatch(rule):
        raise DbopsError(f"{rule!r} is not a squawk rule name (e.g. ban-drop-column)")
    if len(reason.split()) < 3 or "\n" in reason:
        raise DbopsError(f"ignoring squawk's {rule} needs a reason of a few words on one line, not {reason!r}")
    return f"-- squawk-ignore {rule} -- {reason}"


# --- the steps a revision calls ----------------------------------------------------------------------------------


class Steps:
    """What a revision calls inside `with online.steps() as db:`. `Online` runs them, `Offline` writes their SQL."""

    def execute(self, *statements: str, tables: Sequence[str], what: str | None = None) -> None:
        """Any other DDL (rename, drop, type change of an empty table...) in one short transaction, retried."""
        raise NotImplementedError

    def unsafe(self, statement: str, *, tables: Sequence[str], rule: str, reason: str) -> None:
        """The escape hatch: one statement squawk flags under `rule`, run like `execute`; its offline SQL carries
        `-- squawk-ignore <rule> -- <reason>` on the line before it, which silences that rule for it alone."""
        raise NotImplementedError

    def add_column(self, table: str, column: str, type_sql: str, *, default: str | None = None) -> None:
        """ADD COLUMN IF NOT EXISTS; `default` must be a constant (PostgreSQL 11+ then rewrites nothing)."""
        raise NotImplementedError

    def create_index(self, name: str, table: str, columns: Sequence[str], *, unique: bool = False,
                     where: str | None = None) -> None:
        raise NotImplementedError

    def add_foreign_key(self, name: str, table: str, columns: Sequence[str], ref_table: str,
                        ref_columns: Sequence[str] = ("id",), *, on_delete: str | None = None) -> None:
        raise NotImplementedError

    def add_check(self, name: str, table: str, condition: str) -> None:
        raise NotImplementedError

    def add_not_null(self, table: str, column: str) -> None:
        raise NotImplementedError

    def backfill(self, table: str, assignments: str, *, pending: str, batch_size: int = 1000,
                 pause: float = 0.05, key: str | None = None, max_replica_lag: float | None = 10.0) -> int:
        raise NotImplementedError


class Online(Steps):
    """The steps against a live database, on an autocommit SQLAlchemy connection (see the module docstring)."""

    def __init__(self, conn: Connection, *, progress: Progress | None = None, retry: LockRetry | None = None,
                 lag: LagSource = replica_lag) -> None:
        _require_autocommit(conn)
        self.conn = conn
        self.say = progress or _quiet
        self.retry = retry
        self.lag = lag
        self._told_invisible = False

    def _short(self, what: str, tables: Sequence[str], body: Callable[[Connection], T]) -> T:
        return with_lock_retries(self.conn, what, body, tables=tables, progress=self.say, retry=self.retry)

    def _scan(self, what: str, tables: Sequence[str], statement: str) -> None:
        self.say(f"{what} (writes go on)")
        with_lock_retries(self.conn, what, lambda c: _sql(c, statement), tables=tables, progress=self.say,
                          retry=self.retry, lock_timeout=BUILD_LOCK_TIMEOUT, statement_timeout=BUILD_TIMEOUT)

    def execute(self, *statements: str, tables: Sequence[str], what: str | None = None) -> None:
        def body(c: Connection) -> None:
            for statement in statements:
                _sql(c, statement)

        self._short(what or f"DDL on {', '.join(tables)}", tables, body)

    def unsafe(self, statement: str, *, tables: Sequence[str], rule: str, reason: str) -> None:
        _lint_ignore(rule, reason)
        self.execute(statement, tables=tables, what=f"{rule} (lint ignored: {reason})")

    def add_column(self, table: str, column: str, type_sql: str, *, default: str | None = None) -> None:
        statement = (f"ALTER TABLE public.{ident(table)} ADD COLUMN IF NOT EXISTS {ident(column)} {type_sql}"
                     + (f" DEFAULT {default}" if default is not None else ""))
        self._short(f"adding column {table}.{column}", [table], lambda c: _sql(c, statement))

    def create_index(self, name: str, table: str, columns: Sequence[str], *, unique: bool = False,
                     where: str | None = None) -> None:
        create_index_concurrently(self.conn, name, table, columns, unique=unique, where=where, progress=self.say)

    def _validated(self, name: str, table: str, tables: Sequence[str], add: str) -> None:
        state = _constraint(self.conn, table, name)
        if state is None:
            def body(c: Connection) -> None:
                if _constraint(c, table, name) is None:
                    _sql(c, add)

            self._short(f"adding constraint {name} NOT VALID", tables, body)
        if state is not True:
            self._scan(f"validating constraint {name} on {table}", tables, validate_sql(name, table))

    def add_foreign_key(self, name: str, table: str, columns: Sequence[str], ref_table: str,
                        ref_columns: Sequence[str] = ("id",), *, on_delete: str | None = None) -> None:
        add = foreign_key_sql(name, table, columns, ref_table, ref_columns, on_delete)
        self._validated(name, table, [table, ref_table], add)

    def add_check(self, name: str, table: str, condition: str) -> None:
        self._validated(name, table, [table], check_sql(name, table, condition))

    def add_not_null(self, table: str, column: str) -> None:
        if _not_null(self.conn, table, column):
            return
        check = not_null_check_name(table, column)
        self._validated(check, table, [table], check_sql(check, table, f"{ident(column)} IS NOT NULL"))

        def body(c: Connection) -> None:
            # PostgreSQL 12+ skips the scan: the validated check proves there is no NULL.
            _sql(c, f"ALTER TABLE public.{ident(table)} ALTER COLUMN {ident(column)} SET NOT NULL")
            _sql(c, f"ALTER TABLE public.{ident(table)} DROP CONSTRAINT IF EXISTS {ident(check)}")

        self._short(f"setting {table}.{column} NOT NULL", [table], body)

    def wait_for_replicas(self, bound: float, what: str) -> None:
        """Return once every replica replays within `bound` seconds; say so while waiting; give up after
        LAG_WAIT_SECONDS with one sentence."""
        started = time.monotonic()
        told = 0.0
        while True:
            lags = self.lag(self.conn)
            if lags is None:
                if not self._told_invisible:
                    self.say(f"{what}: this login cannot see the replicas' replay lag (it needs pg_monitor); "
                             "not waiting for replicas")
                    self._told_invisible = True
                return
            behind = [(name, lag) for name, lag in lags if lag is not None and lag > bound]
            if not behind:
                return
            shown = ", ".join(f"replica {name} replays {lag:.1f} s behind" for name, lag in behind)
            waited = time.monotonic() - started
            if waited >= LAG_WAIT_SECONDS:
                raise DbopsError(
                    f"{what} stopped after waiting {waited:.0f} s for the replicas to catch up ({shown}, more than "
                    f"{bound:g} s); the rows done so far stay done: run the release again to resume"
                )
            if time.monotonic() - told >= TELL_EVERY:
                self.say(f"{what} paused: {shown} (more than {bound:g} s)")
                told = time.monotonic()
            time.sleep(LAG_POLL)

    def backfill(self, table: str, assignments: str, *, pending: str, batch_size: int = 1000,
                 pause: float = 0.05, key: str | None = None, max_replica_lag: float | None = 10.0) -> int:
        """UPDATE `table` SET `assignments` on the rows where `pending` holds (e.g. `new_col IS NULL`), in batches
        of `batch_size` in key order, each its own transaction, `pause` seconds apart; before each batch wait while
        a replica replays more than `max_replica_lag` seconds behind. Starts at the first pending row (so it
        resumes where a killed run left off); passes again over rows that turned up pending behind it, and fails
        if they keep coming (the application must write the column before a backfill). Returns rows updated."""
        if batch_size < 1 or pause < 0:
            raise DbopsError("backfill needs batch_size >= 1 and pause >= 0")
        k = ident(key or _primary_key(self.conn, table))
        t = f"public.{ident(table)}"
        what = f"backfill of {table}"
        # The table, key and predicates are the revision's constants (identifiers checked by ident()).
        first_sql = f"SELECT {k} FROM {t} WHERE ({pending}) ORDER BY {k} LIMIT 1"  # noqa: S608
        batch_sql = (
            f"WITH batch AS MATERIALIZED (SELECT {k} FROM {t} WHERE {k} >= :cursor AND ({pending}) "  # noqa: S608
            f"ORDER BY {k} LIMIT {int(batch_size)}), "
            f"done AS (UPDATE {t} SET {assignments} WHERE {k} IN (SELECT {k} FROM batch) AND ({pending}) RETURNING 1)"
            f" SELECT (SELECT count(*) FROM done), (SELECT {k} FROM batch ORDER BY {k} DESC LIMIT 1), "
            f"(SELECT count(*) FROM batch)"
        )
        after_sql = f"SELECT {k} FROM {t} WHERE {k} > :cursor ORDER BY {k} LIMIT 1"  # noqa: S608
        total = 0
        started = told = time.monotonic()
        for sweep in range(1, BACKFILL_SWEEPS + 1):
            row = _sql(self.conn, first_sql).fetchone()
            if row is None:
                break
            cursor = row[0]
            if sweep == 1:
                earlier = _sql(self.conn, f"SELECT EXISTS (SELECT 1 FROM {t} WHERE {k} < :c)", {"c": cursor})  # noqa: S608
                resumed = bool(earlier.scalar())
                self.say(f"{what}: {'resuming at the first row still to do' if resumed else 'starting'} "
                         f"(batches of {batch_size}, {pause:g} s apart)")
            else:
                self.say(f"{what}: pass {sweep} over rows that turned up pending behind the first")
            while cursor is not None:
                if max_replica_lag is not None:
                    self.wait_for_replicas(max_replica_lag, what)
                start = cursor

                def one_batch(c: Connection, start: Any = start) -> tuple[int, Any, int]:
                    updated, last, seen = _sql(c, batch_sql, {"cursor": start}).one()
                    return int(updated), last, int(seen)

                updated, last, seen = self._short(what, [table], one_batch)
                total += updated
                if seen < batch_size or last is None:
                    break
                nxt = _sql(self.conn, after_sql, {"cursor": last}).fetchone()
                cursor = None if nxt is None else nxt[0]
                if time.monotonic() - told >= TELL_EVERY:
                    rate = total / max(time.monotonic() - started, 1e-9)
                    self.say(f"{what}: {total:,} rows so far ({rate:,.0f} rows/s)")
                    told = time.monotonic()
                if pause:
                    time.sleep(pause)
        else:
            if _sql(self.conn, first_sql).fetchone() is not None:
                raise DbopsError(
                    f"{what} made {BACKFILL_SWEEPS} passes and rows matching `{pending}` keep turning up; deploy "
                    "the application version that writes the column first, then run the release again"
                )
        self.say(f"{what}: done, {total:,} rows updated in {time.monotonic() - started:.1f} s")
        return total


class Offline(Steps):
    """The steps as SQL for review and squawk (`alembic upgrade --sql`): the same statements, no retries."""

    def __init__(self, emit: Callable[[str], None], comment: Callable[[str], None]) -> None:
        self.emit = emit
        self.comment = comment

    def _transaction(self, *statements: str) -> None:
        self.emit("BEGIN")
        for statement in statements:
            self.emit(statement)
        self.emit("COMMIT")

    def execute(self, *statements: str, tables: Sequence[str], what: str | None = None) -> None:
        self._transaction(*statements)

    def unsafe(self, statement: str, *, tables: Sequence[str], rule: str, reason: str) -> None:
        self.emit("BEGIN")
        self.comment(_lint_ignore(rule, reason))
        self.emit(statement)
        self.emit("COMMIT")

    def add_column(self, table: str, column: str, type_sql: str, *, default: str | None = None) -> None:
        self._transaction(f"ALTER TABLE public.{ident(table)} ADD COLUMN IF NOT EXISTS {ident(column)} {type_sql}"
                          + (f" DEFAULT {default}" if default is not None else ""))

    def create_index(self, name: str, table: str, columns: Sequence[str], *, unique: bool = False,
                     where: str | None = None) -> None:
        from dbops.migrate import LOCK_TIMEOUT, STATEMENT_TIMEOUT

        self.emit(f"SET lock_timeout = '{BUILD_LOCK_TIMEOUT}'")
        self.emit(f"SET statement_timeout = '{BUILD_TIMEOUT}'")
        self.emit("SET max_parallel_maintenance_workers = 0")
        self.emit(index_sql(name, table, columns, unique=unique, where=where))
        self.emit(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        self.emit(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        self.emit("RESET max_parallel_maintenance_workers")

    def add_foreign_key(self, name: str, table: str, columns: Sequence[str], ref_table: str,
                        ref_columns: Sequence[str] = ("id",), *, on_delete: str | None = None) -> None:
        self._transaction(foreign_key_sql(name, table, columns, ref_table, ref_columns, on_delete))
        self._transaction(validate_sql(name, table))

    def add_check(self, name: str, table: str, condition: str) -> None:
        self._transaction(check_sql(name, table, condition))
        self._transaction(validate_sql(name, table))

    def add_not_null(self, table: str, column: str) -> None:
        check = not_null_check_name(table, column)
        self.add_check(check, table, f"{ident(column)} IS NOT NULL")
        self.emit("BEGIN")
        self.emit(f"ALTER TABLE public.{ident(table)} ALTER COLUMN {ident(column)} SET NOT NULL")
        self.comment(_lint_ignore("ban-drop-constraint", f"the NOT NULL of {column} now says what {check} said"))
        self.emit(f"ALTER TABLE public.{ident(table)} DROP CONSTRAINT IF EXISTS {ident(check)}")
        self.emit("COMMIT")

    def backfill(self, table: str, assignments: str, *, pending: str, batch_size: int = 1000,
                 pause: float = 0.05, key: str | None = None, max_replica_lag: float | None = 10.0) -> int:
        update = f"UPDATE public.{ident(table)} SET {assignments} WHERE {pending}"  # noqa: S608 - for reading
        self.comment(f"-- backfill (online only, in batches of {batch_size}, {pause:g} s apart, waiting while a "
                     f"replica lags more than {max_replica_lag} s): {update}")
        return 0


@contextmanager
def steps() -> Iterator[Steps]:
    """For a revision: leave its transaction (the steps run in transactions of their own) and hand out the steps;
    offline (`--sql`) they write SQL instead."""
    from alembic import context, op

    migration = op.get_context()
    with migration.autocommit_block():
        if context.is_offline_mode():
            yield Offline(op.execute, lambda line: migration.impl.static_output(line))
        else:
            yield Online(op.get_bind(), progress=context.config.attributes.get("progress"))
