"""The offline SQL of every revision passes squawk; the history is one straight line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from dbhelpers import HEAD, REVISIONS

from dbops import migrate, online

SQUAWK = str(Path(sys.executable).parent / "squawk")


def offline_sql(revision: str) -> str:
    """`alembic upgrade <previous>:<revision> --sql`: this revision's SQL alone."""
    script = migrate.script_directory().get_revision(revision)
    assert script is not None
    buffer = io.StringIO()
    config = migrate.alembic_config()
    config.output_buffer = buffer
    command.upgrade(config, f"{script.down_revision or 'base'}:{revision}", sql=True)
    return buffer.getvalue()


def squawk(sql: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SQUAWK, "--reporter", "gcc", "--pg-version", "15", "--stdin-filepath", name],
        input=sql,
        capture_output=True,
        text=True,
    )


def test_history_is_linear_with_one_head() -> None:
    script = migrate.script_directory()
    revisions = list(reversed(list(script.walk_revisions())))
    assert tuple(r.revision for r in revisions) == REVISIONS
    assert script.get_heads() == [HEAD]
    assert all(isinstance(r.down_revision, (str, type(None))) for r in revisions)


@pytest.mark.parametrize("revision", REVISIONS)
def test_revision_sql_passes_squawk(revision: str) -> None:
    result = squawk(offline_sql(revision), f"{revision}.sql")
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_is_live() -> None:
    # Without this revision's justified ignore, the seed's column types are flagged: the linter really runs.
    sql = offline_sql("0001_seed_schema").replace("-- squawk-ignore-file", "-- (ignore removed)")
    result = squawk(sql, "0001_without_ignore.sql")
    assert result.returncode != 0 and "prefer-text-field" in result.stdout
    assert squawk("CREATE INDEX idx ON users (email);", "bad.sql").returncode != 0


def test_the_concurrent_index_revision_holds_nothing_else() -> None:
    sql = offline_sql("0002_chat_history_index")
    ddl = [s.strip() for s in sql.split(";") if s.strip().split(" ", 1)[0] in ("CREATE", "DROP", "ALTER")]
    assert ddl == [
        "DROP INDEX CONCURRENTLY IF EXISTS idx_chat_messages_conversation_created",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chat_messages_conversation_created "
        "ON chat_messages (conversation_id, created_at)",
    ]
    # Outside the per-revision transaction, with the time limit raised only around the build.
    build = sql.index("CREATE INDEX CONCURRENTLY")
    assert sql.rindex("COMMIT;", 0, build) > sql.rindex("BEGIN;", 0, build)
    assert sql.rindex("SET statement_timeout = '4h'", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert f"SET statement_timeout = '{migrate.STATEMENT_TIMEOUT}'" in sql[build:]
    # Finding 2: the build's lock waits stay short (and are retried online); only the statement gets 4 h.
    assert sql.rindex(f"SET lock_timeout = '{online.BUILD_LOCK_TIMEOUT}'", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert "SET lock_timeout = '4h'" not in sql
    # One core for the build, so the application's queries keep the others (bench figure 3), then back to normal.
    assert sql.rindex("SET max_parallel_maintenance_workers = 0", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert "RESET max_parallel_maintenance_workers" in sql[build:]
