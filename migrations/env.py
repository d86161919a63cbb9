"""Alembic environment for gaia-db.

Three ways in:
- programmatic (dbops.migrate): a SQLAlchemy connection in `config.attributes["connection"]`, already switched to the
  owner role with session timeouts; the caller holds the release lock;
- online from the shell: `DATABASE_URL` (postgres://, postgresql://, postgresql+psycopg://), connected the same way
  as a release (owner role, timeouts) and under the same advisory lock;
- offline (`--sql`): the SQL, preceded by the same session settings.
Every revision runs in its own transaction, so a failing one leaves the database at the last good revision.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from dbops import locking
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.migrate import MIGRATION_SETTINGS, migration_connection
from dbops.models import metadata
from dbops.urls import parse_url

config = context.config


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_offline() -> None:
    # "named" keeps a literal % in SQL text as is (pyformat would double it).
    configure(url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"})
    for statement in MIGRATION_SETTINGS:
        context.execute(statement)
    context.run_migrations()


def run_on(connection: Connection) -> None:
    configure(connection=connection, on_version_apply=config.attributes.get("on_version_apply"))
    with context.begin_transaction():
        context.run_migrations()


def run_from_environment() -> None:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise DbopsError("set DATABASE_URL to the database to migrate (or use --sql for offline SQL)")
    target = parse_url(url)
    with (
        connect(target, wait_seconds=30) as lock_conn,
        locking.release_lock(lock_conn),
        migration_connection(target, wait_seconds=30) as connection,
    ):
        run_on(connection)


if context.is_offline_mode():
    run_offline()
elif "connection" in config.attributes:
    run_on(config.attributes["connection"])
else:
    if config.config_file_name:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    try:
        run_from_environment()
    except DbopsError as exc:
        raise SystemExit(f"error: {exc}") from None
