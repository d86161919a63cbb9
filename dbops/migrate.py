"""Alembic, driven from code: the head revision without a database, and upgrades run as the owner role.

`alembic.ini` and `migrations/` are found next to this package, never through the working directory, so the
Pulumi program (any CWD) and the CLI agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from dbops import online
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.names import OWNER_ROLE
from dbops.urls import DatabaseUrl

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS = ROOT / "migrations"

# Session limits for everything a release runs: DDL gives up instead of queueing behind (and in front of) the
# application's locks. 0002, which builds an index concurrently, raises statement_timeout and lock_timeout for its
# whole autocommit block and sets them back to these values at the end of it.
LOCK_TIMEOUT = "10s"
STATEMENT_TIMEOUT = "5min"
SESSION_SETTINGS = (
    f"SET lock_timeout = '{LOCK_TIMEOUT}'",
    f"SET statement_timeout = '{STATEMENT_TIMEOUT}'",
)
# Migrations create objects as the NOLOGIN owner role, so ownership never depends on who deploys.
MIGRATION_SETTINGS = (*SESSION_SETTINGS, f"SET ROLE {OWNER_ROLE}")

Progress = Callable[[str], None]


def alembic_config() -> Config:
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def describe(revision: str) -> str:
    """`0002_chat_history_index (index chat_messages for conversation history)` for messages."""
    script = script_directory().get_revision(revision)
    return f"{revision} ({script.doc})" if script is not None and script.doc else revision


def open_migration_session(
    target: DatabaseUrl, *, wait_seconds: float, as_owner: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection set up for migrating: session timeouts and `SET ROLE` to the owner, outside any transaction.

    The settings are issued in autocommit so a later rollback cannot undo them. `as_owner=False` stays the login
    user (adoption, which runs before the owner role may exist).
    """
    conn = connect(target, wait_seconds=wait_seconds, autocommit=True)
    try:
        for statement in MIGRATION_SETTINGS if as_owner else SESSION_SETTINGS:
            conn.execute(statement)  # constant SQL
    except psycopg.Error as exc:
        conn.close()
        raise DbopsError(
            f"could not switch to the owner role {OWNER_ROLE} ({primary_reason(exc)}); "
            "run `python -m dbops release`, which creates it, before migrating"
        ) from None
    conn.autocommit = False
    return conn


@contextmanager
def migration_connection(
    target: DatabaseUrl, *, wait_seconds: float, as_owner: bool = True
) -> Iterator[Connection]:
    """A SQLAlchemy connection on a migration session, for Alembic."""
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: open_migration_session(target, wait_seconds=wait_seconds, as_owner=as_owner),
        poolclass=NullPool,
    )
    try:
        try:
            conn = engine.connect()  # SQLAlchemy's first connect also queries the server (version, settings)
        except SQLAlchemyError as exc:
            raise DbopsError(f"opening the migration session failed: {primary_reason(exc)}") from None
        with conn:
            yield conn
    finally:
        engine.dispose()


def current_revision(conn: Connection) -> str | None:
    try:
        revision = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()  # end the autobegun transaction, so Alembic opens one per revision
    except (SQLAlchemyError, psycopg.Error) as exc:
        raise DbopsError(f"reading the schema revision (alembic_version) failed: {primary_reason(exc)}") from None
    return revision


def primary_reason(exc: BaseException) -> str:
    """The server's one-line reason (never the statement, which could hold a literal)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, psycopg.Error) and orig.diag.message_primary:
        return orig.diag.message_primary
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _plan(conn: Connection, target: str) -> tuple[str | None, list[str]]:
    """The database's revision and the revisions an upgrade to `target` applies, oldest first."""
    current = current_revision(conn)
    script = script_directory()
    try:
        if current is not None:
            script.get_revision(current)
        steps = list(script.iterate_revisions(target, current or "base"))
    except CommandError:
        raise DbopsError(
            f"the database is at revision {current!r}, which these migrations do not contain "
            "(a newer release migrated it); deploy that release or a newer one"
        ) from None
    return current, [step.revision for step in reversed(steps)]


def upgrade(
    database: DatabaseUrl,
    *,
    target: str = "head",
    wait_seconds: float = 30.0,
    progress: Progress | None = None,
) -> list[str]:
    """Upgrade to `target`, one transaction per revision; returns the revisions applied, oldest first.

    On failure the database stays at the last revision that committed, and the error names the one that failed.
    The caller holds the release lock.
    """
    config = alembic_config()
    applied: list[str] = []

    def on_apply(*, step: object, **_: object) -> None:
        revision = str(getattr(step, "up_revision_id", ""))
        applied.append(revision)
        if progress:
            progress(f"applied {describe(revision)}")

    with migration_connection(database, wait_seconds=wait_seconds) as conn:
        current, plan = _plan(conn, target)
        if not plan:
            if progress:
                progress(f"schema already at {current}")
            return applied
        if progress:
            progress(f"upgrading from {current or 'base'}: {', '.join(plan)}")
        config.attributes["connection"] = conn
        config.attributes["on_version_apply"] = on_apply
        config.attributes["progress"] = progress  # revisions that wait (dbops.online) say what for
        try:
            _upgrade_retrying_locks(config, conn, target, lambda: plan[min(len(applied), len(plan) - 1)], progress)
        except (SQLAlchemyError, psycopg.Error) as exc:
            failed = plan[len(applied)] if len(applied) < len(plan) else plan[-1]
            stays = applied[-1] if applied else current
            # Without a revision the database is not necessarily empty (a seed-made one that adoption refused is
            # full): say what is recorded, not what is there.
            stays_at = f"stays at revision {stays}" if stays else "records no revision (nothing of it was applied)"
            raise DbopsError(
                f"migration {describe(failed)} failed: {primary_reason(exc)}; the database {stays_at}"
            ) from None
    return applied


def _upgrade_retrying_locks(
    config: Config, conn: Connection, target: str, running: Callable[[], str], progress: Progress | None
) -> None:
    """`alembic upgrade target` where every revision's transaction runs with a short lock_timeout: when a lock cannot
    be had in time, PostgreSQL aborts the whole transaction, so the revision is rolled back and run again after a
    pause (backoff + jitter), naming the sessions that hold locks. Revisions before it stay applied."""
    policy = online.RETRY
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        timeout = f"{policy.timeout_ms(attempt)}ms"
        conn.execute(text(f"SET lock_timeout = '{timeout}'"))  # session-wide (committed), for the next revisions
        conn.commit()
        try:
            command.upgrade(config, target)
            return
        except (SQLAlchemyError, psycopg.Error) as exc:
            if not online.is_lock_timeout(exc):
                raise
            conn.rollback()
        holders = online.lock_holders(conn, None)
        conn.rollback()
        waited, pause = time.monotonic() - started, policy.pause(attempt)
        if waited + pause > policy.give_up_after:
            raise DbopsError(
                f"migration {describe(running())} gave up after {attempt} attempts in {waited:.0f} s: it could not "
                f"get its locks within {timeout} while {holders} held them; end that transaction and run the "
                "release again (the revisions before it stay applied)"
            )
        if progress:
            progress(f"migration {describe(running())} could not get its locks within {timeout} (held by "
                     f"{holders}); rolled back attempt {attempt}, retrying in {pause:.1f} s")
        time.sleep(pause)


def downgrade(database: DatabaseUrl, *, target: str, wait_seconds: float = 30.0) -> None:
    """Downgrade to `target` (e.g. `base`) as the owner role; for tests and emergencies. Caller holds the lock."""
    config = alembic_config()
    with migration_connection(database, wait_seconds=wait_seconds) as conn:
        current_revision(conn)
        config.attributes["connection"] = conn
        try:
            command.downgrade(config, target)
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise DbopsError(f"downgrade to {target} failed: {primary_reason(exc)}") from None
