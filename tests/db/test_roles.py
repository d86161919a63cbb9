"""DESIGN.md's role matrix, cell by cell, by logging in as each service role and trying the statement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cli_runner import run_dbops
from dbhelpers import (
    ADMIN_EMAIL,
    ADMIN_KEY,
    HEAD,
    PASSWORDS,
    project_copy,
    query,
    release_args,
    release_env,
    revision_source,
)
from matrix import ALLOWED, Conn, allowed, insert_sample_rows, statements
from pgserver import PgServer

from dbops.names import OWNER_ROLE, SERVICES
from dbops.release import ReleaseResult, release
from dbops.urls import with_credentials

CREATE_ANYTHING = {
    "create_table": "CREATE TABLE public.intruder (id int)",
    "create_temp_table": "CREATE TEMP TABLE intruder (id int)",
    "create_schema": "CREATE SCHEMA intruder",
    "create_function": "CREATE FUNCTION public.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "create_view": "CREATE VIEW public.intruder AS SELECT 1 AS x",
}


@pytest.fixture(scope="module")
def matrix_db(pg: PgServer) -> tuple[str, ReleaseResult]:
    _, url = pg.create_database()
    result = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, admin_api_key=ADMIN_KEY)
    with psycopg.connect(url, autocommit=True) as conn:
        insert_sample_rows(conn)
    return url, result


@pytest.fixture(scope="module")
def sessions(matrix_db: tuple[str, ReleaseResult]) -> Iterator[dict[str, Conn]]:
    """One login per service, through the service URL the release returned."""
    conns = {s: psycopg.connect(matrix_db[1].service_urls[s], autocommit=True) for s in SERVICES}
    try:
        yield conns
    finally:
        for conn in conns.values():
            conn.close()


CELLS = [
    (service, table, operation) for service in SERVICES for table in ALLOWED[service] for operation in statements(table)
]


@pytest.mark.parametrize(("service", "table", "operation"), CELLS)
def test_matrix_cell(sessions: dict[str, Conn], service: str, table: str, operation: str) -> None:
    expected = operation in ALLOWED[service][table]
    assert allowed(sessions[service], statements(table)[operation]) is expected


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("what", sorted(CREATE_ANYTHING))
def test_no_service_creates_anything(sessions: dict[str, Conn], service: str, what: str) -> None:
    assert not allowed(sessions[service], CREATE_ANYTHING[what])


def test_role_attributes(matrix_db: tuple[str, ReleaseResult]) -> None:
    url = matrix_db[0]
    rows = query(
        url,
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname LIKE 'gaia\\_%' ORDER BY 1",
    )
    assert rows == sorted(
        [(OWNER_ROLE, False, False, False, False, False, False)]
        + [(f"gaia_{s}", True, False, False, False, False, False) for s in SERVICES]
    )
    # No service role is a member of anything (least of all the owner); the admin is a member of the owner only.
    members = query(
        url, "SELECT pg_get_userbyid(member) FROM pg_auth_members WHERE roleid = %s::regrole", (OWNER_ROLE,)
    )
    assert [m for (m,) in members if m.startswith("gaia_")] == []
    assert query(url, "SELECT count(*) FROM pg_auth_members WHERE member::regrole::text LIKE 'gaia\\_%'") == [(0,)]
    # Nobody can pass privileges on (a GRANT without grant option only warns, so look in the catalog).
    services = [f"gaia_{s}" for s in SERVICES]
    for view in ("table_privileges", "column_privileges"):
        grantable = f"SELECT count(*) FROM information_schema.{view} WHERE grantee = ANY(%s) AND is_grantable = 'YES'"
        assert query(url, grantable, (services,)) == [(0,)]
    # The release ran as a non-superuser admin, like RDS's / Cloud SQL's.
    assert query(url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]


def test_default_privileges_cover_a_table_created_later(matrix_db: tuple[str, ReleaseResult]) -> None:
    url, result = matrix_db
    with psycopg.connect(url, autocommit=True) as conn:  # a table created as the owner, outside any release
        conn.execute(f"SET ROLE {OWNER_ROLE}")
        conn.execute("CREATE TABLE adhoc (id int)")
    try:
        for service in SERVICES:
            with psycopg.connect(result.service_urls[service], autocommit=True) as conn:
                assert allowed(conn, "SELECT * FROM adhoc") is (service == "analytics")
                assert not allowed(conn, "INSERT INTO adhoc VALUES (1)")
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TABLE adhoc")


def test_a_table_added_by_a_later_migration_follows_the_matrix(admin_url: str, tmp_path: Path) -> None:
    later = revision_source(
        "0003_feedback",
        HEAD,
        "feedback table",
        "CREATE TABLE feedback (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), body text NOT NULL)",
    )
    project = project_copy(tmp_path, {"0003_feedback.py": later})
    first = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS), cwd=project)
    assert first.returncode == 0, first.stderr
    for service in SERVICES:
        with psycopg.connect(with_credentials(admin_url, user=f"gaia_{service}", password=PASSWORDS[service])) as conn:
            conn.autocommit = True
            assert allowed(conn, "SELECT * FROM feedback") is (service == "analytics")
            for write in ("INSERT INTO feedback (body) VALUES ('x')", "DELETE FROM feedback", "TRUNCATE feedback"):
                assert not allowed(conn, write)
