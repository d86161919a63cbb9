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

from dbops.errors import DbopsError
from dbops.names import LOGINS, OWNER_ROLE, PASSWORD_LOGIN_ROLES, PASSWORD_LOGINS, SECOND_LOGINS
from dbops.release import ReleaseResult, release
from dbops.urls import with_credentials

pytestmark = pytest.mark.xdist_group("roles")  # one worker runs this file's module-scoped servers

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


def login_urls(result: ReleaseResult) -> dict[str, str]:
    """Each login's URL as the release returned it: the services', the read-only reader's, and the services' second
    logins' (`chat_alt`), which must have exactly their service's rights."""
    assert result.reader_url is not None
    seconds = {SECOND_LOGINS[service]: url for service, url in result.second_login_urls.items()}
    return {**result.service_urls, "reader": result.reader_url, **seconds}


def matrix_row(login: str) -> str:
    """The matrix row a login follows: a second login (`chat_alt`) its service's."""
    return login.removesuffix("_alt")


@pytest.fixture(scope="module")
def sessions(matrix_db: tuple[str, ReleaseResult]) -> Iterator[dict[str, Conn]]:
    """One session per login (the services and gaia_reader), through the URLs the release returned."""
    conns = {s: psycopg.connect(url, autocommit=True) for s, url in login_urls(matrix_db[1]).items()}
    try:
        yield conns
    finally:
        for conn in conns.values():
            conn.close()


CELLS = [
    (login, table, operation)
    for login in PASSWORD_LOGINS
    for table in ALLOWED[matrix_row(login)]
    for operation in statements(table)
]


@pytest.mark.parametrize(("service", "table", "operation"), CELLS)
def test_matrix_cell(sessions: dict[str, Conn], service: str, table: str, operation: str) -> None:
    expected = operation in ALLOWED[matrix_row(service)][table]
    assert allowed(sessions[service], statements(table)[operation]) is expected


@pytest.mark.parametrize("service", PASSWORD_LOGINS)
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
        + [(role, True, False, False, False, False, False) for role in PASSWORD_LOGIN_ROLES.values()]
    )
    # No managed role is a member of anything (least of all the owner) except a second login of its service role;
    # the admin is a member of the owner only.
    members = query(
        url, "SELECT pg_get_userbyid(member) FROM pg_auth_members WHERE roleid = %s::regrole", (OWNER_ROLE,)
    )
    assert [m for (m,) in members if m.startswith("gaia_")] == []
    memberships = query(
        url, "SELECT member::regrole::text, roleid::regrole::text FROM pg_auth_members "
        "WHERE member::regrole::text LIKE 'gaia\\_%' ORDER BY 1",
    )
    assert memberships == sorted((f"gaia_{s}_alt", f"gaia_{s}") for s in ("analytics", "chat", "assets", "auth"))
    # Both logins of a service carry the same per-role settings.
    settings = dict(query(url, "SELECT r.rolname, s.setconfig FROM pg_db_role_setting s "
                               "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname LIKE 'gaia\\_%'"))
    assert {role: settings.get(role) for role in PASSWORD_LOGIN_ROLES.values()} == {
        role: ["idle_in_transaction_session_timeout=1min"] for role in PASSWORD_LOGIN_ROLES.values()
    }
    # Nobody can pass privileges on (a GRANT without grant option only warns, so look in the catalog).
    services = [f"gaia_{s}" for s in LOGINS]
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
        for service, login_url in login_urls(result).items():
            with psycopg.connect(login_url, autocommit=True) as conn:
                assert allowed(conn, "SELECT * FROM adhoc") is (matrix_row(service) in ("analytics", "reader"))
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
    for service in LOGINS:
        with psycopg.connect(with_credentials(admin_url, user=f"gaia_{service}", password=PASSWORDS[service])) as conn:
            conn.autocommit = True
            assert allowed(conn, "SELECT * FROM feedback") is (service in ("analytics", "reader"))
            for write in ("INSERT INTO feedback (body) VALUES ('x')", "DELETE FROM feedback", "TRUNCATE feedback"):
                assert not allowed(conn, write)


def _membership(url: str, role: str, of: str) -> bool:
    return bool(query(url, "SELECT pg_has_role(%s, %s, 'MEMBER')", (role, of))[0][0])


def test_the_release_reconciles_planted_memberships_attributes_and_connect(
    pg: PgServer, superuser: psycopg.Connection[tuple[object, ...]], released: tuple[str, ReleaseResult]
) -> None:
    """Finding 4: stray memberships and attributes go, designed ones stay; only managed roles may connect."""
    url, result = released
    dbname = url.rsplit("/", 1)[1]
    superuser.execute("DO $$ BEGIN CREATE ROLE rds_iam NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    superuser.execute("DROP ROLE IF EXISTS stranger")
    superuser.execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger-pw'")
    plant = [
        f"GRANT {OWNER_ROLE} TO gaia_chat",
        "GRANT pg_write_all_data TO gaia_analytics",
        "GRANT gaia_auth TO gaia_reader",  # the reader is managed like the services
        "GRANT gaia_auth TO gaia_assets",
        "GRANT rds_iam TO gaia_chat",  # a cloud's IAM login role: designed, kept
        "ALTER ROLE gaia_assets CREATEDB CREATEROLE NOINHERIT",
        f"ALTER ROLE {OWNER_ROLE} LOGIN CREATEDB",  # a role whose password the release never sets
        "ALTER ROLE gaia_auth RESET ALL",
        # Second logins: a stray membership and a direct grant go, the designed membership comes back, settings too.
        "GRANT gaia_auth TO gaia_chat_alt",
        "REVOKE gaia_analytics FROM gaia_analytics_alt",
        "ALTER ROLE gaia_chat_alt RESET ALL",
    ]
    try:
        for statement in plant:
            superuser.execute(statement)  # type: ignore[arg-type]
        with psycopg.connect(url, autocommit=True) as conn:  # a direct grant to a second login, in the database
            conn.execute("GRANT INSERT ON users TO gaia_assets_alt")
            conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL 14's default (RDS, Cloud SQL 14)
        lines: list[str] = []
        release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, progress=lines.append)
        assert not _membership(url, "gaia_chat", OWNER_ROLE)
        assert not _membership(url, "gaia_analytics", "pg_write_all_data")
        assert not _membership(url, "gaia_reader", "gaia_auth")
        assert not _membership(url, "gaia_assets", "gaia_auth")
        assert _membership(url, "gaia_chat", "rds_iam")
        assert not _membership(url, "gaia_chat_alt", "gaia_auth") and _membership(url, "gaia_chat_alt", "gaia_chat")
        assert _membership(url, "gaia_analytics_alt", "gaia_analytics")
        assert query(url, "SELECT has_table_privilege('gaia_assets_alt', 'users', 'INSERT')") == [(False,)]
        assert query(
            url, "SELECT rolcreatedb, rolcreaterole, rolinherit FROM pg_roles WHERE rolname = 'gaia_assets'"
        ) == [(False, False, True)]
        assert query(url, "SELECT rolcanlogin, rolcreatedb FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)) == [
            (False, False)]
        assert query(url, "SELECT bool_or(has_schema_privilege(r, 'public', 'CREATE')) FROM unnest(%s::text[]) r",
                     (list(PASSWORD_LOGIN_ROLES.values()),)) == [(False,)]
        assert "role reconciled: gaia_chat no longer in gaia_owner" in lines
        for login_url in login_urls(result).values():
            with psycopg.connect(login_url) as conn:
                assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(pg.url("stranger", "stranger-pw", dbname)).close()
    finally:
        superuser.execute("REVOKE rds_iam FROM gaia_chat")
        superuser.execute("DROP ROLE stranger")
        for statement in (f"REVOKE {OWNER_ROLE} FROM gaia_chat", "REVOKE pg_write_all_data FROM gaia_analytics",
                          "REVOKE gaia_auth FROM gaia_assets", "REVOKE gaia_auth FROM gaia_reader",
                          "REVOKE gaia_auth FROM gaia_chat_alt",
                          "GRANT gaia_analytics TO gaia_analytics_alt"):
            superuser.execute(statement)  # type: ignore[arg-type]
        superuser.execute(f"ALTER ROLE {OWNER_ROLE} NOLOGIN NOCREATEDB")


@pytest.mark.parametrize("attribute", ["BYPASSRLS", "REPLICATION", "SUPERUSER"])
def test_an_attribute_the_admin_cannot_clear_stops_the_release_and_changes_nothing(
    pg: PgServer, superuser: psycopg.Connection[tuple[object, ...]], released: tuple[str, ReleaseResult],
    attribute: str,
) -> None:
    url, _ = released
    dbname = url.rsplit("/", 1)[1]
    try:
        superuser.execute(f"ALTER ROLE gaia_assets {attribute}")  # type: ignore[arg-type]
        superuser.execute(f"GRANT {OWNER_ROLE} TO gaia_chat")  # type: ignore[arg-type]
        with pytest.raises(DbopsError) as caught:
            release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
        message = str(caught.value)
        assert message.startswith(f"role gaia_assets has {attribute}, which the admin admin_")
        assert f"ALTER ROLE gaia_assets NO{attribute}" in message and message.endswith("nothing was changed")
        assert _membership(url, "gaia_chat", OWNER_ROLE)  # nothing was changed
        # A superuser admin (the local stack's and Fly's shape) clears it.
        release(pg.url(dbname=dbname), environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS)
        column = {"BYPASSRLS": "rolbypassrls", "REPLICATION": "rolreplication", "SUPERUSER": "rolsuper"}[attribute]
        assert query(url, f"SELECT {column} FROM pg_roles WHERE rolname = 'gaia_assets'") == [(False,)]
        assert not _membership(url, "gaia_chat", OWNER_ROLE)
    finally:
        superuser.execute(f"ALTER ROLE gaia_assets NO{attribute}")  # type: ignore[arg-type]
        superuser.execute(f"REVOKE {OWNER_ROLE} FROM gaia_chat")  # type: ignore[arg-type]


def test_a_serial_column_added_by_a_later_migration_can_be_written_by_its_writer(
    admin_url: str, tmp_path: Path
) -> None:
    """Finding 5: sequences follow the table's writers (and new sequences the default privileges)."""
    later = revision_source(
        "0003_chat_seq", HEAD, "chat sequence numbers",
        "ALTER TABLE chat_messages ADD COLUMN seq bigserial\n"
        "CREATE TABLE feedback (id bigserial PRIMARY KEY, body text)",
    )
    project = project_copy(tmp_path, {"0003_chat_seq.py": later})
    done = run_dbops(*release_args(), env=release_env(admin_url, PASSWORDS), cwd=project)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(admin_url, autocommit=True) as conn:
        insert_sample_rows(conn)
    logins = {s: with_credentials(admin_url, user=f"gaia_{s}", password=PASSWORDS[s]) for s in LOGINS}
    with psycopg.connect(logins["chat"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chat_messages (user_id, conversation_id, role, content) "
            "SELECT user_id, conversation_id, role, 'again' FROM chat_messages LIMIT 1"
        )
        assert not allowed(conn, "SELECT nextval('feedback_id_seq')")
    for reader in ("analytics", "reader"):
        with psycopg.connect(logins[reader], autocommit=True) as conn:
            assert not allowed(conn, "SELECT nextval('chat_messages_seq_seq')")
            assert allowed(conn, "SELECT last_value FROM feedback_id_seq")
    with psycopg.connect(logins["assets"], autocommit=True) as conn:
        assert not allowed(conn, "SELECT nextval('chat_messages_seq_seq')")
