"""Faults: a database that comes up late, none at all, wrong credentials, a failing revision, a lost session."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import psycopg
import pytest
from cli_runner import Background, error_line, run_dbops
from dbhelpers import (
    ADMIN_EMAIL,
    HEAD,
    PASSWORDS,
    project_copy,
    query,
    release_args,
    release_env,
    revision_source,
)
from pgserver import PgServer, free_port

from dbops import connect, locking
from dbops.connect import transient_reason
from dbops.errors import DbopsError
from dbops.release import release


class FakeClock:
    """Stands in for `time` in dbops.connect: sleeping advances the clock at once and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def connections_received(pg: PgServer) -> int:
    """Connection attempts the server has seen so far (the session server logs each one)."""
    return pg.log_file.read_text().count("connection received:")


def test_a_database_that_starts_after_the_release_began_is_waited_for() -> None:
    server = PgServer().start()
    try:
        _, url = server.create_database()
        server.stop_server()
        with Background(*release_args(), "--wait", "120", env={"DATABASE_URL": url}) as child:
            # Start the server only once the release has found nothing and said it is waiting.
            assert child.wait_for_stderr("waiting for PostgreSQL at 127.0.0.1:"), child.stderr_so_far
            server.start_server()
            done = child.finish()
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["revision"] == HEAD
        assert f"waiting for PostgreSQL at 127.0.0.1:{server.port} (connection refused)" in done.stderr
    finally:
        server.stop()


def test_nothing_listening_fails_clearly_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(connect, "time", clock)
    port = free_port()
    said: list[str] = []
    with pytest.raises(DbopsError) as caught:
        release(f"postgresql://admin:s3cret-pw@127.0.0.1:{port}/gaia", environment="dev", admin_email=ADMIN_EMAIL,
                wait_seconds=10, progress=said.append)
    assert str(caught.value) == (
        f"could not reach PostgreSQL at 127.0.0.1:{port} within 10 s (connection refused); check that the server is "
        "running and reachable, or give it longer to start"
    )
    assert "s3cret-pw" not in str(caught.value)
    # It waited exactly the whole deadline, in capped exponential steps (±20 % jitter), and said so once.
    assert sum(clock.sleeps) == pytest.approx(10)
    steps = clock.sleeps[:-1]  # the last step is cut to what was left
    assert steps[0] == pytest.approx(connect.FIRST_DELAY, rel=0.2)
    assert len(steps) >= 4 and all(b > a for a, b in itertools.pairwise(steps[:4]))  # 0.25, 0.5, 1, 2: growing
    assert max(clock.sleeps) <= connect.MAX_DELAY * 1.2
    assert [line for line in said if line.startswith("waiting")] == [
        f"waiting for PostgreSQL at 127.0.0.1:{port} (connection refused)"]


def test_wrong_password_fails_at_once(pg: PgServer, admin_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(connect, "time", clock)
    user, rest = admin_url.removeprefix("postgresql://").split(":", 1)
    wrong = f"postgresql://{user}:Wrong-Pa55word@{rest.split('@', 1)[1]}"
    before = connections_received(pg)
    with pytest.raises(DbopsError) as caught:
        release(wrong, environment="dev", admin_email=ADMIN_EMAIL, wait_seconds=60)
    assert clock.sleeps == [] and connections_received(pg) == before + 1  # one attempt, no retry
    host_port = rest.split("@", 1)[1].split("/")[0]
    assert str(caught.value) == (
        f"PostgreSQL at {host_port} rejected the password for user '{user}'; check the credentials"
    )
    assert "Wrong-Pa55word" not in str(caught.value)


def test_missing_database_fails_at_once(pg: PgServer, admin_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(connect, "time", clock)
    missing = admin_url.rsplit("/", 1)[0] + "/no_such_db"
    before = connections_received(pg)
    with pytest.raises(DbopsError, match=r"database 'no_such_db' does not exist on 127\.0\.0\.1:"):
        release(missing, environment="dev", admin_email=ADMIN_EMAIL, wait_seconds=60)
    assert clock.sleeps == [] and connections_received(pg) == before + 1  # one attempt, no retry


@pytest.mark.parametrize(
    ("message", "retry"),
    [
        ('connection to server at "10.0.0.5", port 5432 failed: FATAL:  the database system is starting up', True),
        ('connection to server at "h", port 5432 failed: the database system is not yet accepting connections', True),
        ("failed to resolve host 'gaia-db-dev.internal': [Errno -2] Name or service not known", True),
        ('could not translate host name "db" to address: Temporary failure in name resolution', True),
        ('connection to server at "h", port 5432 failed: timeout expired', True),
        ('connection to server at "h", port 5432 failed: FATAL:  password authentication failed for user "u"', False),
        ('connection to server at "h", port 5432 failed: FATAL:  database "x" does not exist', False),
        ('connection to server at "h", port 5432 failed: FATAL:  no pg_hba.conf entry for host "1.2.3.4"', False),
    ],
)
def test_which_connection_errors_are_waited_out(message: str, retry: bool) -> None:
    # libpq's wording for states a test cannot easily put a server in (starting up, DNS not yet propagated).
    assert (transient_reason(message) is not None) is retry


def test_a_failing_revision_leaves_the_last_good_one_and_is_named(admin_url: str, tmp_path: Path) -> None:
    broken = revision_source(
        "0003_broken",
        HEAD,
        "add a column that already exists",
        "CREATE TABLE half_done (id int)\nALTER TABLE users ADD COLUMN email text",
    )
    project = project_copy(tmp_path, {"0003_broken.py": broken})
    out = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS), cwd=project)
    assert out.returncode == 1 and out.stdout == ""
    assert error_line(out.stderr) == (
        "error: migration 0003_broken (add a column that already exists) failed: "
        'column "email" of relation "users" already exists; the database stays at revision 0002_chat_history_index'
    )
    assert "applied 0001_seed_schema" in out.stderr and "applied 0002_chat_history_index" in out.stderr
    assert query(admin_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert query(admin_url, "SELECT to_regclass('public.half_done')") == [(None,)]  # its transaction rolled back

    # The current code releases that database normally afterwards.
    fixed = release(admin_url, environment="dev", admin_email=ADMIN_EMAIL)
    assert fixed.revision == HEAD and fixed.applied == ()


def test_a_database_from_a_newer_release_is_refused(admin_url: str, tmp_path: Path) -> None:
    newer = revision_source("0003_newer", HEAD, "newer", "CREATE TABLE newer (id int PRIMARY KEY)")
    assert (
        run_dbops(*release_args(), env=release_env(admin_url), cwd=project_copy(tmp_path, {"0003_newer.py": newer}))
        .returncode
        == 0
    )
    with pytest.raises(DbopsError, match="database is at revision '0003_newer', which these migrations do not contain"):
        release(admin_url, environment="dev", admin_email=ADMIN_EMAIL)
    assert query(admin_url, "SELECT version_num FROM alembic_version") == [("0003_newer",)]


def test_losing_the_session_while_waiting_for_the_lock_is_one_sentence(pg: PgServer, admin_url: str) -> None:
    dbname = admin_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (locking.LOCK_KEY,))
        with Background(*release_args(), env=release_env(admin_url, PASSWORDS)) as child:
            assert child.wait_for_stderr("waiting for another release"), child.stderr_so_far
            pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       f"WHERE datname = '{dbname}' AND application_name = 'gaia-db-release'")
            done = child.finish()
    assert done.returncode == 1 and done.stdout == ""
    assert error_line(done.stderr) == (
        "error: taking the release lock failed: terminating connection due to administrator command")


def test_an_unreadable_revision_table_is_one_sentence(pg: PgServer, admin_url: str) -> None:
    # alembic_version exists but the owner role may not read it: reading the revision fails before any migration.
    dbname = admin_url.rsplit("/", 1)[1]
    pg.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)", dbname=dbname)
    done = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS))
    assert done.returncode == 1 and done.stdout == ""
    assert error_line(done.stderr) == (
        "error: reading the schema revision (alembic_version) failed: permission denied for table alembic_version")
