"""Least-privilege roles: the NOLOGIN owner, one login role per service, the read-only `gaia_reader`, and DESIGN.md's
privilege matrix.

Everything here works as a non-superuser admin with CREATEROLE (RDS `rds_superuser`, Cloud SQL
`cloudsqlsuperuser`): no superuser attributes are set or cleared, and membership in the owner role is granted
explicitly by the admin to itself (PG 16 no longer makes the creator of a role a usable member of it).
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.names import LOGIN_ROLES, OWNER_ROLE, PASSWORD_LOGIN_ROLES, SECOND_LOGIN_ROLES, SERVICE_ROLES

READ = ("SELECT",)
READ_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")

# DESIGN.md's matrix: login (service or reader) -> table -> privileges; a table missing from a row gets nothing.
# "— (read allowed)" for chat and assets on users is granted as read.
MATRIX: dict[str, dict[str, tuple[str, ...]]] = {
    "analytics": {"users": READ, "api_keys": READ, "chat_messages": READ, "assets": READ},
    "chat": {"users": READ, "chat_messages": READ_WRITE},
    "assets": {"users": READ, "assets": READ_WRITE},
    "auth": {"users": READ_WRITE, "api_keys": READ_WRITE},
    "reader": {"users": READ, "api_keys": READ, "chat_messages": READ, "assets": READ},
}
# Columns a login may not read where it reads the table (granted column by column from the catalog).
HIDDEN_COLUMNS: dict[str, dict[str, frozenset[str]]] = {
    "analytics": {"api_keys": frozenset({"key_hash"})},
    "reader": {"api_keys": frozenset({"key_hash"})},
}
# Tables the matrix does not name (added by later revisions) are read by these logins and no others; the same
# rule is set as default privileges, so a table is covered from the moment a migration creates it.
READS_NEW_TABLES = ("analytics", "reader")
KNOWN_TABLES = frozenset(table for row in MATRIX.values() for table in row)
WRITES = "INSERT"  # a service that may insert into a table may draw from that table's sequences

# Memberships a managed role may hold: the clouds' IAM login roles (kept where IAM auth put them). A service's second
# login (`gaia_chat_alt`) is a member *of* the service role, which is also kept. Every other membership is revoked.
IAM_LOGIN_ROLES = frozenset({"rds_iam", "cloudsqliamuser"})
# second login role -> the service role it is a member of (its only rights)
SECOND_LOGIN_OF: dict[str, str] = {
    SECOND_LOGIN_ROLES[f"{service}_alt"]: role for service, role in SERVICE_ROLES.items()
}
# Every login's session (services and reader) ends a transaction left idle this long: an idle transaction stalls an
# online index build.
SERVICE_SETTINGS = {"idle_in_transaction_session_timeout": "1min"}
# Attributes no managed role may have, and the attributes each managed role must have exactly.
FORBIDDEN_ATTRIBUTES = {"rolsuper": "SUPERUSER", "rolbypassrls": "BYPASSRLS", "rolreplication": "REPLICATION"}

Conn = psycopg.Connection[tuple[object, ...]]


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _roles(services: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(_ident(LOGIN_ROLES[s]) for s in services)


def _create_role_if_missing(conn: Conn, role: str) -> None:
    # There is no CREATE ROLE IF NOT EXISTS. Roles are cluster-wide while the release lock is per database, so a
    # release of another database in the same cluster may create the role concurrently: that is fine too.
    conn.execute(
        sql.SQL(
            """
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {name}) THEN
                    CREATE ROLE {role} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$
            """
        ).format(name=sql.Literal(role), role=_ident(role))
    )


def existing_logins(conn: Conn) -> frozenset[str]:
    """The logins (services, reader, second logins) whose role exists and can log in (so it has a password in use)."""
    by_role = {role: login for login, role in PASSWORD_LOGIN_ROLES.items()}
    rows = conn.execute(
        "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s) AND rolcanlogin", (list(by_role),)
    ).fetchall()
    return frozenset(by_role[str(row[0])] for row in rows)


def _savepoint(conn: Conn, statement: sql.Composed, role: str, what: str) -> None:
    """Run one reconciling statement; a privilege the admin lacks becomes one sentence (the transaction is rolled
    back by the caller, so the release changes nothing)."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported) as exc:
        admin = conn.info.user
        raise DbopsError(
            f"role {role} has {what}, which the admin {admin} may not remove ({exc.diag.message_primary}); have a "
            f"superuser remove it (e.g. {_remedy(role, what)}) and run the release again; nothing was changed"
        ) from None


def _remedy(role: str, what: str) -> str:
    if what.startswith("membership in "):
        return f"REVOKE {what.removeprefix('membership in ')} FROM {role}"
    return f"ALTER ROLE {role} NO{what}"


def reconcile_roles(conn: Conn) -> list[str]:
    """Bring every managed role (the owner, the services, the reader) to DESIGN.md's attributes and memberships.

    Run in a transaction before anything else changes: when the admin may not remove something (a non-superuser
    cannot clear SUPERUSER, nor BYPASSRLS / REPLICATION unless PostgreSQL lets it), this raises one sentence naming the
    role and the attribute, and the caller's rollback leaves everything as it was. Returns what it changed.
    """
    managed = [OWNER_ROLE, *PASSWORD_LOGIN_ROLES.values()]
    designed = [f"{second} in {service}" for second, service in SECOND_LOGIN_OF.items()]
    changed: list[str] = []
    rows = conn.execute(
        "SELECT rolname, rolsuper, rolbypassrls, rolreplication, rolcreatedb, rolcreaterole, rolinherit, rolcanlogin "
        "FROM pg_catalog.pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
        (managed,),
    ).fetchall()
    for name, is_super, bypassrls, replication, createdb, createrole, inherit, canlogin in rows:
        role = str(name)
        present = {"rolsuper": is_super, "rolbypassrls": bypassrls, "rolreplication": replication}
        for column, attribute in FORBIDDEN_ATTRIBUTES.items():
            if present[column]:
                _savepoint(conn, sql.SQL("ALTER ROLE {} WITH NO" + attribute).format(_ident(role)), role, attribute)
                changed.append(f"{role} NO{attribute}")
        wanted = ["NOCREATEDB"] if createdb else []
        wanted += ["NOCREATEROLE"] if createrole else []
        wanted += [] if inherit else ["INHERIT"]
        wanted += ["NOLOGIN"] if role == OWNER_ROLE and canlogin else []
        if wanted:
            conn.execute(sql.SQL("ALTER ROLE {} WITH " + " ".join(wanted)).format(_ident(role)))
            changed.append(f"{role} {' '.join(wanted)}")
    # Memberships held by a managed role that the design does not give it.
    stray = conn.execute(
        "SELECT r.rolname, m.rolname, g.rolname FROM pg_catalog.pg_auth_members a "
        "JOIN pg_catalog.pg_roles r ON r.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member "
        "LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantor "
        "WHERE m.rolname = ANY(%s) AND NOT (m.rolname <> %s AND r.rolname = ANY(%s)) "
        "AND m.rolname || ' in ' || r.rolname <> ALL(%s) ORDER BY 2, 1",
        (managed, OWNER_ROLE, sorted(IAM_LOGIN_ROLES), designed),
    ).fetchall()
    for granted, member, grantor in stray:
        revoke = sql.SQL("REVOKE {} FROM {}").format(_ident(str(granted)), _ident(str(member)))
        if conn.info.server_version >= 160000 and grantor is not None:
            revoke = sql.SQL("{} GRANTED BY {}").format(revoke, _ident(str(grantor)))
        _savepoint(conn, revoke, str(member), f"membership in {granted}")
        changed.append(f"{member} no longer in {granted}")
    left = conn.execute(
        "SELECT r.rolname, m.rolname FROM pg_catalog.pg_auth_members a JOIN pg_catalog.pg_roles r ON r.oid = a.roleid "
        "JOIN pg_catalog.pg_roles m ON m.oid = a.member WHERE m.rolname = ANY(%s) "
        "AND NOT (m.rolname <> %s AND r.rolname = ANY(%s)) "
        "AND m.rolname || ' in ' || r.rolname <> ALL(%s) LIMIT 1",
        (managed, OWNER_ROLE, sorted(IAM_LOGIN_ROLES), designed),
    ).fetchone()
    if left is not None:
        raise DbopsError(
            f"role {left[1]} is still a member of {left[0]} after the release revoked it (another grantor's grant); "
            f"have a superuser run REVOKE {left[0]} FROM {left[1]} and run the release again; nothing was changed"
        )
    # Both logins of a service get the same settings: whichever is active behaves the same.
    for role in PASSWORD_LOGIN_ROLES.values():
        for setting, value in SERVICE_SETTINGS.items():
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(_ident(role), _ident(setting), sql.Literal(value))
            )
    return changed


def ensure_roles(conn: Conn) -> None:
    """Before migrating: roles exist, the admin may act as the owner, schema and default privileges are set.

    Login roles are created NOLOGIN; `set_passwords` enables login once the schema is in place. Each service's second
    login is made a member of the service role: that membership is all its rights.
    """
    for role in (OWNER_ROLE, *PASSWORD_LOGIN_ROLES.values()):
        _create_role_if_missing(conn, role)
    for second, service in SECOND_LOGIN_OF.items():
        if conn.execute(
            "SELECT FROM pg_catalog.pg_auth_members WHERE roleid = %s::regrole AND member = %s::regrole",
            (service, second),
        ).fetchone() is None:
            conn.execute(sql.SQL("GRANT {} TO {}").format(_ident(service), _ident(second)))
    owner = _ident(OWNER_ROLE)
    everyone = _roles(list(LOGIN_ROLES))
    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER GRANTED BY CURRENT_USER").format(owner))
    # Only the owner creates objects; nobody gets temporary tables or new schemas in this database.
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(everyone))
    database = _ident(str(conn.info.dbname))
    # Only the managed roles (and the database's owner, whose rights are its own) may connect.
    conn.execute(sql.SQL("REVOKE TEMPORARY, CONNECT ON DATABASE {} FROM PUBLIC").format(database))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, everyone))
    # Default privileges: reset, then grant exactly what READS_NEW_TABLES says.
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public REVOKE ALL ON TABLES FROM {}").format(
            owner, everyone
        )
    )
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(
            owner, _roles(READS_NEW_TABLES)
        )
    )
    # Sequences likewise: readers of new tables may read their sequences; a writer gets USAGE on the sequences of the
    # tables it may insert into from `apply_grants`, which runs after every migration.
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {}").format(
            owner, everyone
        )
    )
    conn.execute(
        sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON SEQUENCES TO {}").format(
            owner, _roles(READS_NEW_TABLES)
        )
    )


def privileges(service: str, table: str) -> tuple[str, ...]:
    """What the matrix gives `service` on `table` (before hiding columns)."""
    if table in KNOWN_TABLES:
        return MATRIX[service].get(table, ())
    return READ if service in READS_NEW_TABLES else ()


def apply_grants(conn: Conn) -> None:
    """After migrating: every table the owner has in public gets exactly the matrix's privileges (reconciled)."""
    tables = [
        str(row[0])
        for row in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s) ORDER BY c.relname",
            (OWNER_ROLE,),
        )
    ]
    everyone = _roles(list(LOGIN_ROLES))
    # Second logins hold nothing directly (their rights come through membership): stray grants go.
    seconds = sql.SQL(", ").join(_ident(role) for role in SECOND_LOGIN_OF)
    for table in tables:
        target = sql.SQL("public.{}").format(_ident(table))
        # Revoking table privileges revokes column privileges too, so stale grants of any kind go.
        conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}, {}").format(target, everyone, seconds))
        for service, role in LOGIN_ROLES.items():
            granted = privileges(service, table)
            hidden = HIDDEN_COLUMNS.get(service, {}).get(table, frozenset())
            if not granted:
                continue
            if not hidden:
                conn.execute(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in granted), target, _ident(role)
                    )
                )
                continue
            if granted != READ:
                raise ValueError(f"hidden columns are only supported for read-only grants ({service}.{table})")
            columns = [
                str(row[0])
                for row in conn.execute(
                    "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    (f"public.{table}",),
                )
                if row[0] not in hidden
            ]
            conn.execute(
                sql.SQL("GRANT SELECT ({}) ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(_ident(c) for c in columns), target, _ident(role)
                )
            )
    apply_sequence_grants(conn)


def apply_sequence_grants(conn: Conn) -> None:
    """Every sequence the owner has in public: USAGE and SELECT for the services that may insert into its table (so
    `serial` / `bigserial` defaults work), SELECT for readers of new tables; nothing for anyone else."""
    sequences = conn.execute(
        "SELECT s.relname, t.relname FROM pg_catalog.pg_class s "
        "LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "LEFT JOIN pg_catalog.pg_class t ON t.oid = d.refobjid "
        "WHERE s.relkind = 'S' AND s.relnamespace = 'public'::regnamespace "
        "AND s.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s) ORDER BY s.relname",
        (OWNER_ROLE,),
    ).fetchall()
    everyone = _roles(list(LOGIN_ROLES))
    for sequence, table in sequences:
        target = sql.SQL("public.{}").format(_ident(str(sequence)))
        conn.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(target, everyone))
        for service, role in LOGIN_ROLES.items():
            table_privileges = privileges(service, str(table)) if table is not None else ()
            if WRITES in table_privileges:
                granted = sql.SQL("USAGE, SELECT")
            elif service in READS_NEW_TABLES:
                granted = sql.SQL("SELECT")
            else:
                continue
            conn.execute(sql.SQL("GRANT {} ON SEQUENCE {} TO {}").format(granted, target, _ident(role)))


# Statement logging and pg_stat_statements' utility tracking, off for the rest of the transaction. Only a superuser
# may change them (Fly's admin); elsewhere the verifiers are readable where docs/RUNBOOK.md says.
QUIET_SETTINGS = (
    "SET LOCAL log_statement = 'none'",
    "SET LOCAL log_min_duration_statement = -1",
    "SET LOCAL log_min_error_statement = panic",
    "SET LOCAL pg_stat_statements.track_utility = off",
)


def set_passwords(conn: Conn, passwords: Mapping[str, str]) -> None:
    """Enable login for each login role (service or reader) with its password (call inside a transaction).

    The server only ever sees a SCRAM verifier computed here by libpq (as psql's \\password does), so neither its
    logs nor pg_stat_statements can hold the plaintext; the statement itself is never logged by us. Where the admin
    is a superuser, the transaction also keeps the verifiers out of the server log and pg_stat_statements.
    """
    superuser = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()
    if passwords and superuser == (True,):
        for statement in QUIET_SETTINGS:
            conn.execute(statement)  # constant SQL
    for login, password in passwords.items():
        role = PASSWORD_LOGIN_ROLES[login]
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                _ident(role), sql.Literal(verifier)
            )
        )
