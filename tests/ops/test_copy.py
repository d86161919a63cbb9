"""`python -m dbops copy` between two real PostgreSQL servers (issue 20, item 2 and "Prove it").

The source is a released staging database with thousands of rows; the target a new database on another server (or
one its own stack has released already). Checked independently of dbops' own checksums: every table's rows, in id
order, are the same text on both sides.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cli_runner import error_line, run_dbops
from pgserver import PgServer

from bench.copy_bench import ADMIN_EMAIL, ENVIRONMENT, fill
from dbops import copy as copy_module
from dbops.errors import DbopsError
from dbops.release import release
from dbops.revisions import head_revision
from dbops.urls import parse_url

pytestmark = pytest.mark.xdist_group("copy")  # one worker runs this file's module-scoped servers

TABLES = ("api_keys", "assets", "chat_messages", "users")


@pytest.fixture(scope="module")
def other() -> Iterator[PgServer]:
    """A second server: the copy goes between two clusters, so the target's roles come from its own release."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


def rows_by_table(url: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and the md5 of its rows' text in id order (TimeZone fixed), independent of dbops."""
    result = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) FROM {table} t"
            ).fetchone()
            assert row is not None
            result[table] = (int(row[0]), str(row[1]))
    return result


def revision(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None
    return str(row[0])


def copy_cli(source: str, target: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_dbops("copy", "--environment", ENVIRONMENT, "--admin-email", ADMIN_EMAIL, "--jobs", "3",
                     env={"SOURCE_DATABASE_URL": source, "DATABASE_URL": target, **env}, timeout=300)


@pytest.fixture(scope="module")
def source(pg: PgServer) -> str:
    _, url = pg.create_database()
    fill(url, 3000)
    return url


def test_copy_moves_every_row_verified_and_leaves_the_target_at_head(source: str, other: PgServer) -> None:
    _, target = other.create_database()
    before = rows_by_table(source)
    done = copy_cli(source, target)
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["sourceRevision"] == out["revision"] == head_revision() == revision(target)
    assert out["rows"] == sum(count for count, _ in before.values()) >= 3000
    assert out["tables"] == {table: before[table][0] for table in TABLES} and out["jobs"] == 3
    assert out["rowsPerSecond"] > 0 and out["seconds"]["total"] > 0
    assert rows_by_table(target) == before == rows_by_table(source)  # identical rows; the source untouched
    # Neither URL, nor the source's password, is ever printed (the target's service URLs are the JSON's purpose).
    source_password = parse_url(source).password
    for text in (done.stdout, done.stderr):
        assert source not in text and target not in text and source_password not in text
    # The roles came from the target's release: each service logs in with the URL the JSON hands out.
    assert set(out["serviceUrls"]) == {"analytics", "chat", "assets", "auth"}
    with psycopg.connect(out["serviceUrls"]["chat"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM chat_messages").fetchone()
    assert row == (before["chat_messages"][0],)
    # The source's admin keeps its active key (copied); no new one was generated.
    assert "adminApiKey" not in out


def test_no_url_reaches_a_command_line(source: str, other: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _, target = other.create_database()
    seen: list[tuple[list[str], dict[str, str]]] = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def run(argv: list[str], **kwargs: Any) -> Any:
        seen.append((list(argv), dict(kwargs.get("env") or {})))
        return real_run(argv, **kwargs)

    def popen(argv: list[str], **kwargs: Any) -> Any:
        seen.append((list(argv), dict(kwargs.get("env") or {})))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(copy_module.subprocess, "run", run)
    monkeypatch.setattr(copy_module.subprocess, "Popen", popen)
    result = copy_module.copy(source, target, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, jobs=2)
    assert result.revision == head_revision()
    tools = {argv[0].rsplit("/", 1)[-1] for argv, _ in seen}
    assert tools == {"pg_dump", "pg_restore"}
    assert any("--jobs=2" in argv for argv, _ in seen if argv[0].endswith("pg_dump"))
    for argv, env in seen:
        for url in (source, target):
            parsed = parse_url(url)
            assert not any(parsed.password in arg or "postgresql://" in arg or parsed.user in arg for arg in argv)
        assert "PGPASSWORD" not in env and env["PGPASSFILE"] and env["PGHOST"] == "127.0.0.1"


def test_a_target_its_stack_released_takes_the_copy_and_the_stacks_admin_key(source: str, other: PgServer) -> None:
    _, target = other.create_database()
    stack_key = "gaia_" + "k" * 48
    release(target, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, admin_api_key=stack_key)  # the new stack's up
    done = copy_cli(source, target, GAIA_DB_ADMIN_API_KEY=stack_key)
    assert done.returncode == 0, done.stderr
    after = rows_by_table(target)
    assert after["chat_messages"] == rows_by_table(source)["chat_messages"]
    with psycopg.connect(target, autocommit=True) as conn:
        active = conn.execute(
            "SELECT k.key_hash FROM api_keys k JOIN users u ON u.id = k.user_id "
            "WHERE u.email = %s AND k.is_active AND k.name = 'Admin Key'", (ADMIN_EMAIL,)).fetchall()
    assert active == [(hashlib.sha256(stack_key.encode()).hexdigest(),)]  # the stack's adminApiKey is the one


def test_an_older_source_is_copied_at_its_revision_then_migrated(pg: PgServer, other: PgServer) -> None:
    _, old = pg.create_database()
    release(old, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, revision="0001_seed_schema")
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute("INSERT INTO users (email, name) SELECT 'o' || i || '@x.io', 'o' FROM generate_series(1, 50) i")
    _, target = other.create_database()
    done = copy_cli(old, target)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["sourceRevision"], out["revision"]) == ("0001_seed_schema", head_revision())
    assert rows_by_table(target) == rows_by_table(old)
    # The other way round is refused: the target is newer than the source.
    _, old_again = pg.create_database()
    release(old_again, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, revision="0001_seed_schema")
    _, newer = other.create_database()
    release(newer, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL)
    refused = copy_cli(old_again, newer)
    assert refused.returncode == 1
    assert "newer than the source's 0001_seed_schema" in error_line(refused.stderr)


def test_a_target_with_data_is_refused_and_left_alone(source: str, other: PgServer) -> None:
    _, target = other.create_database()
    fill(target, 100)
    before = rows_by_table(target)
    done = copy_cli(source, target)
    assert done.returncode == 1 and done.stdout == ""
    line = error_line(done.stderr)
    assert "already holds data" in line and "nothing was copied" in line and "chat_messages (60 rows)" in line
    assert rows_by_table(target) == before


def test_rows_written_into_the_target_while_it_is_released_stop_the_copy(
        source: str, other: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The target was empty when checked, then someone wrote to it before the copy began: refused, left alone."""
    _, target = other.create_database()
    real_release = copy_module.release

    def release_then_a_write(*args: Any, **kwargs: Any) -> Any:
        released = real_release(*args, **kwargs)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("SET ROLE gaia_owner")
            conn.execute("INSERT INTO users (email, name) VALUES ('early@x.io', 'early')")
        return released

    monkeypatch.setattr(copy_module, "release", release_then_a_write)
    with pytest.raises(DbopsError, match=r"already holds data \(users \(1 rows\)\)"):
        copy_module.copy(source, target, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, jobs=1)
    with psycopg.connect(target, autocommit=True) as conn:
        assert conn.execute("SELECT email FROM users WHERE email <> %s", (ADMIN_EMAIL,)).fetchall() == [
            ("early@x.io",)]


FIRST_MESSAGE = "id = (SELECT id FROM chat_messages ORDER BY id LIMIT 1)"


@pytest.mark.parametrize(("sabotage", "reported"), [
    (f"UPDATE chat_messages SET content = content || '!' WHERE {FIRST_MESSAGE}",
     "chat_messages's rows differ from the source's"),
    (f"DELETE FROM chat_messages WHERE {FIRST_MESSAGE}", "chat_messages has {n} rows"),
])
def test_a_copy_that_does_not_match_the_source_is_refused_and_removed(
        source: str, other: PgServer, monkeypatch: pytest.MonkeyPatch, sabotage: str, reported: str) -> None:
    _, target = other.create_database()
    real_restore = copy_module._restore

    def restore_then_change_a_row(*args: Any) -> None:  # what a faulty restore or a concurrent writer would leave
        real_restore(*args)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("SET ROLE gaia_owner")
            conn.execute(sabotage)  # type: ignore[arg-type]

    monkeypatch.setattr(copy_module, "_restore", restore_then_change_a_row)
    with pytest.raises(DbopsError) as refused:
        copy_module.copy(source, target, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, jobs=1)
    message = str(refused.value)
    expected = reported.format(n=rows_by_table(source)["chat_messages"][0] - 1)
    assert expected in message and "the copied rows were removed again" in message, message
    assert all(count == 0 for count, _ in rows_by_table(target).values())


def test_misuse_is_one_sentence(pg: PgServer, source: str) -> None:
    same = copy_cli(source, source)
    assert same.returncode == 1 and "both name database" in error_line(same.stderr)
    _, bare = pg.create_database()
    _, empty = pg.create_database()
    unreleased = copy_cli(bare, empty)
    assert unreleased.returncode == 1 and "records no gaia-db revision" in error_line(unreleased.stderr)
    missing = run_dbops("copy", "--environment", ENVIRONMENT, "--admin-email", ADMIN_EMAIL,
                        env={"DATABASE_URL": empty})
    assert missing.returncode == 1 and "SOURCE_DATABASE_URL" in error_line(missing.stderr)
    for url in (source, empty):
        assert url not in same.stderr + unreleased.stderr + missing.stderr
    with pytest.raises(DbopsError, match="--jobs 0"):
        copy_module.copy(source, empty, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL, jobs=0)
