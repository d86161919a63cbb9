"""Helpers for the release-engine tests (real PostgreSQL; see tests/pgserver.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
from cli_runner import ROOT

HEAD = "0002_chat_history_index"
REVISIONS = ("0001_seed_schema", "0002_chat_history_index")

# Characters that need URL-encoding and SQL quoting, plus non-ASCII (SASLprep) — the paths must cope.
PASSWORDS = {
    "analytics": "an@lytics:pw/1%",
    "chat": "chat pw+2?#&",
    "assets": "assets-pw-3-✓",
    "auth": "auth'pw\"4\\",
    "reader": "reader/pw@5:",  # the read-only gaia_reader: one more managed login, same mechanism
    # Each service's second login (gaia_chat_alt), for rotation without a failed login (credentialsVersion).
    "analytics_alt": "an@lytics-alt:pw/6%",
    "chat_alt": "chat alt pw+7?#&",
    "assets_alt": "assets-alt-pw-8-✓",
    "auth_alt": "auth'alt-pw\"9\\",
}
ADMIN_KEY = "gaia_test-admin-key-0123456789abcdef"
ADMIN_EMAIL = "admin@dev.gaia.com"


def release_env(
    database_url: str | None, passwords: dict[str, str] | None = None, admin_key: str | None = None
) -> dict[str, str | None]:
    """What the release CLI reads, for `run_dbops(..., env=...)`; None leaves a variable unset."""
    return {
        "DATABASE_URL": database_url,
        "GAIA_DB_ROLE_PASSWORDS": None if passwords is None else json.dumps(passwords),
        "GAIA_DB_ADMIN_API_KEY": admin_key,
    }


def release_args(environment: str = "dev", email: str = ADMIN_EMAIL, *extra: str) -> list[str]:
    return ["release", "--environment", environment, "--admin-email", email, *extra]


def project_copy(tmp_path: Path, revisions: dict[str, str]) -> Path:
    """This project's release engine (dbops, migrations, alembic.ini) plus extra revision files: a "next version"."""
    dest = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "dbops", dest / "dbops", ignore=ignore)
    shutil.copytree(ROOT / "migrations", dest / "migrations", ignore=ignore)
    shutil.copy(ROOT / "alembic.ini", dest / "alembic.ini")
    for name, source in revisions.items():
        (dest / "migrations" / "versions" / name).write_text(source)
    return dest


def revision_source(revision: str, down: str, doc: str, body: str) -> str:
    """The text of a revision file whose upgrade() runs `body` (SQL statements, one per line)."""
    statements = "\n".join(f"    op.execute({line!r})" for line in body.strip().splitlines())
    return (
        f'"""{doc}"""\n\nfrom alembic import op\n\nrevision = {revision!r}\ndown_revision = {down!r}\n'
        f"branch_labels = None\ndepends_on = None\n\n\ndef upgrade() -> None:\n{statements}\n\n\n"
        "def downgrade() -> None:\n    pass\n"
    )


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def schema_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The public schema from the catalog: columns, constraints, indexes, triggers, functions (not alembic_version)."""
    not_version = "<> 'alembic_version'"
    return {
        "columns": query(
            url,
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            f"WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname {not_version} "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
        ),
        "constraints": query(
            url,
            "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text {not_version} ORDER BY 1, 2",
        ),
        "indexes": query(
            url,
            "SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            f"WHERE t.relnamespace = 'public'::regnamespace AND t.relname {not_version} ORDER BY 1, 2",
        ),
        "triggers": query(
            url,
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal ORDER BY 1, 2",
        ),
        "functions": query(
            url,
            "SELECT proname, pg_get_function_identity_arguments(oid), pg_get_function_result(oid) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2",
        ),
    }
