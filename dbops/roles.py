"""Least-privilege roles: the NOLOGIN owner, one login role per service, and DESIGN.md's privilege matrix.

Everything here works as a non-superuser admin with CREATEROLE (RDS `rds_superuser`, Cloud SQL
`cloudsqlsuperuser`): no superuser attributes are set or cleared, and membership in the owner role is granted
explicitly by the admin to itself (PG 16 no longer makes the creator of a role a usable member of it).
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql

from dbops.names import OWNER_ROLE, SERVICE_ROLES

READ = ("SELECT",)
READ_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")

# DESIGN.md's matrix: service -> table -> privileges; a table missing from a service's row gets nothing.
# "— (read allowed)" for chat and assets on users is granted as read.
MATRIX: dict[str, dict[str, tuple[str, ...]]] = {
    "analytics": {"users": READ, "api_keys": READ, "chat_messages": READ, "assets": READ},
    "chat": {"users": READ, "chat_messages": READ_WRITE},
    "assets": {"users": READ, "assets": READ_WRITE},
    "auth": {"users": READ_WRITE, "api_keys": READ_WRITE},
}
# Columns a service may not read where it reads the table (granted column by column from the catalog).
HIDDEN_COLUMNS: dict[str, dict[str, frozenset[str]]] = {"analytics": {"api_keys": frozenset({"key_hash"})}}
# Tables the matrix does not name (added by later revisions) are read by these services and no others; the same
# rule is set as default privileges, so a table is covered from the moment a migration creates it.
READS_NEW_TABLES = ("analytics",)
KNOWN_TABLES = frozenset(table for row in MATRIX.values() for table in row)

Conn = psycopg.Connection[tuple[object, ...]]


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _roles(services: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(_ident(SERVICE_ROLES[s]) for s in services)


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


def ensure_roles(conn: Conn) -> None:
    """Before migrating: roles exist, the admin may act as the owner, schema and default privileges are set.

    Service roles are created NOLOGIN; `set_passwords` enables login once the schema is in place.
    """
    for role in (OWNER_ROLE, *SERVICE_ROLES.values()):
        _create_role_if_missing(conn, role)
    owner = _ident(OWNER_ROLE)
    everyone = _roles(list(SERVICE_ROLES))
    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER GRANTED BY CURRENT_USER").format(owner))
    # Only the owner creates objects; nobody gets temporary tables or new schemas in this database.
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(owner))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(everyone))
    database = _ident(str(conn.info.dbname))
    conn.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(database))
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
    everyone = _roles(list(SERVICE_ROLES))
    for table in tables:
        target = sql.SQL("public.{}").format(_ident(table))
        # Revoking table privileges revokes column privileges too, so stale grants of any kind go.
        conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(target, everyone))
        for service, role in SERVICE_ROLES.items():
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


def set_passwords(conn: Conn, passwords: Mapping[str, str]) -> None:
    """Enable login for each service role with its password.

    The server only ever sees a SCRAM verifier computed here by libpq (as psql's \\password does), so neither its
    logs nor pg_stat_statements can hold the plaintext; the statement itself is never logged by us.
    """
    for service, password in passwords.items():
        role = SERVICE_ROLES[service]
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                _ident(role), sql.Literal(verifier)
            )
        )
