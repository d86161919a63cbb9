"""Adopting a database made by the seed's `scripts/init-database-portable.sh`: its tables, no `alembic_version`.

Its catalog is compared with what revision 0001 creates, found by running 0001 itself, as the login user, into a
scratch schema in the same transaction; `schema_diff` compares the two (relations, columns, constraints, indexes,
functions, triggers of `public`). Allowed, because the seed's script leaves them:
- the index idx_api_keys_key_hash, which duplicates UNIQUE (key_hash): dropped;
- get_shard_for_user as the seed wrote it (`::int`, negative for 37.5 % of ids), or no such function: 0001's;
- what 0001 has and the seed has not (set_updated_at and its triggers, alembic_version): created as 0001 does.
Not compared: ownership (moved to the owner role), privileges (the release sets them) and data. The admin user the
script inserted without a key (its `SHA256(...)` overflows varchar(64)) gets one from the release's seed step.

Anything else, and nothing changes: the release stops with one sentence listing the differences. When it matches, one
transaction brings the database to 0001 in place (roles, ownership, the objects above from 0001's own catalog
definitions, the revision stamp, predictable admin keys deactivated); a second comparison must then find nothing, or
the whole transaction rolls back. No table is rewritten. The caller holds the release lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from alembic import command
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from dbops import migrate, roles, seed
from dbops.errors import DbopsError
from dbops.names import ENVIRONMENTS, OWNER_ROLE
from dbops.schema_diff import Difference, Snapshot, compare, read_snapshot
from dbops.urls import DatabaseUrl

Progress = Callable[[str], None]
Conn = psycopg.Connection[Any]

REVISION = "0001_seed_schema"
SEED_TABLES = ("users", "api_keys", "chat_messages", "assets")
PROBE = "gaia_adopt_probe"  # the scratch schema 0001 runs into; never committed
HERE, IN_0001 = "this database", f"revision {REVISION}"
COMPARED = ("relation", "column", "constraint", "index", "function", "trigger")  # extensions are database-wide

DUPLICATE_INDEX = ("public.idx_api_keys_key_hash",
                   "CREATE INDEX idx_api_keys_key_hash ON public.api_keys USING btree (key_hash)")
SHARD_FUNCTION = "public.get_shard_for_user(user_id uuid)"
# pg_get_functiondef of the seed's function, whitespace collapsed.
SEED_SHARD_FUNCTION = (
    "CREATE OR REPLACE FUNCTION public.get_shard_for_user(user_id uuid) RETURNS integer LANGUAGE plpgsql AS "
    "$function$ BEGIN RETURN ('x' || substr(user_id::text, 1, 8))::bit(32)::int % 4; END; $function$"
)
# Keys anyone can compute from the environment name: the seed's `SHA256('admin-key-<env>')`, stored as hex by hand
# (the seed's own insert fails). Its script names production `production`.
PREDICTABLE_KEYS = tuple(seed.key_hash(f"admin-key-{env}") for env in (*ENVIRONMENTS, "production"))
MAX_LISTED = 8


@dataclass(frozen=True)
class Plan:
    """What brings the seed's schema to 0001: catalog definitions to run as the owner, and what is refused."""

    drop_indexes: tuple[str, ...]
    definitions: tuple[tuple[str, str], ...]  # (name, CREATE OR REPLACE FUNCTION / CREATE TRIGGER), functions first
    refused: tuple[Difference, ...]

    def summary(self) -> str:
        made = ", ".join(name for name, _ in self.definitions)
        parts = [f"dropped {', '.join(self.drop_indexes)}"] if self.drop_indexes else []
        return "; ".join([*parts, f"created or replaced {made}"] if made else parts) or "nothing else to do"


def _normal(text: str) -> str:
    return " ".join(text.split())


def classify(here: Snapshot, expected: Snapshot) -> Plan:
    """Sort every difference between the database and 0001 into the allowed (with its fix) and the refused."""
    drop: list[str] = []
    functions: list[tuple[str, str]] = []
    triggers: list[tuple[str, str]] = []
    refused: list[Difference] = []
    for diff in compare(here, expected, names=(HERE, IN_0001)):
        ours, theirs = here.objects[diff.kind].get(diff.name), expected.objects[diff.kind].get(diff.name)
        if diff.kind == "index" and (diff.name, ours) == DUPLICATE_INDEX and theirs is None:
            drop.append(diff.name)
        elif diff.kind == "function" and theirs is not None and (
            ours is None or (diff.name == SHARD_FUNCTION and _normal(ours) == SEED_SHARD_FUNCTION)
        ):
            functions.append((diff.name, theirs))
        elif diff.kind == "trigger" and ours is None and theirs is not None:
            triggers.append((diff.name, theirs))
        elif ours is None and diff.name.split(".")[:2] == ["public", "alembic_version"]:
            pass  # the stamp creates it
        elif ours is None and diff.kind == "index" and diff.name == "public.alembic_version_pkc":
            pass  # the stamp's primary key
        else:
            refused.append(diff)
    return Plan(tuple(drop), (*functions, *triggers), tuple(refused))


def refusal(refused: tuple[Difference, ...]) -> str:
    """One sentence: what differs (named, at most MAX_LISTED) and how to proceed."""
    def what(diff: Difference) -> str:
        if diff.text.startswith(f"only in {HERE}"):
            return f"{diff.kind} {diff.name} is extra"
        if diff.text.startswith(f"only in {IN_0001}"):
            return f"{diff.kind} {diff.name} is missing"
        if diff.kind == "column":
            return f"column {diff.name} has {diff.text}"
        return f"{diff.kind} {diff.name} differs"

    listed = "; ".join(what(d) for d in refused[:MAX_LISTED])
    more = f"; and {len(refused) - MAX_LISTED} more" if len(refused) > MAX_LISTED else ""
    return (
        f"this database has the seed's tables but no recorded revision, and its schema differs from {IN_0001} "
        f"in more than the seed's known ways ({listed}{more}), so it was not adopted and nothing was changed; "
        "compare it with a fresh database with `python -m dbops diff-schema`, make it match, and release again "
        "(docs/RUNBOOK.md, \"Moving an existing environment onto gaia-db\")"
    )


def _seed_made(raw: Conn) -> bool:
    """No alembic_version, and at least one of the seed's tables (an empty database is migrated as usual)."""
    row = raw.execute(
        "SELECT to_regclass('public.alembic_version') IS NULL AND EXISTS (SELECT FROM pg_catalog.pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND relname = ANY(%s))",
        (list(SEED_TABLES),),
    ).fetchone()
    return row == (True,)


def _schemas(raw: Conn) -> tuple[Snapshot, Snapshot]:
    """`public` and the probe (renamed to `public`), read in the current transaction."""
    raw.execute("SET LOCAL search_path = pg_catalog")  # every name in pg_get_* output qualified
    both = read_snapshot(raw, "both")
    here, expected = Snapshot(HERE, None), Snapshot(IN_0001, None)
    for kind in COMPARED:
        here.objects[kind], expected.objects[kind] = {}, {}
        for name, value in both.objects[kind].items():
            if name.startswith("public."):
                here.objects[kind][name] = value
            elif name.startswith(f"{PROBE}."):
                expected.objects[kind]["public." + name[len(PROBE) + 1:]] = _renamed(value)
    return here, expected


def _renamed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _renamed(item) for key, item in value.items()}
    return value.replace(f"{PROBE}.", "public.") if isinstance(value, str) else value


def _run_0001_into_probe(conn: Connection, raw: Conn) -> None:
    raw.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(PROBE)))
    raw.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(PROBE)))
    config = migrate.alembic_config()
    config.attributes["connection"] = conn  # in a transaction already: Alembic opens none of its own
    command.upgrade(config, REVISION)


def _apply(conn: Connection, raw: Conn, plan: Plan) -> int:
    """Bring `public` to 0001 in the current transaction; returns how many predictable admin keys were deactivated."""
    roles.ensure_roles(raw)
    # The login user (who ran the seed's script) owns the tables and the function: hand them to the owner role.
    # (After the comparison `public` holds exactly the seed's tables and functions; indexes follow their table.)
    raw.execute(
        sql.SQL(
            """
            DO $$
            DECLARE
                object text;
            BEGIN
                FOR object IN SELECT format('TABLE %s', c.oid::regclass) FROM pg_catalog.pg_class c
                              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                              UNION ALL
                              SELECT format('FUNCTION %s', p.oid::regprocedure) FROM pg_catalog.pg_proc p
                              WHERE p.pronamespace = 'public'::regnamespace
                LOOP
                    EXECUTE format('ALTER %s OWNER TO %I', object, {owner});
                END LOOP;
            END
            $$
            """
        ).format(owner=sql.Literal(OWNER_ROLE))
    )
    raw.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(OWNER_ROLE)))
    for index in plan.drop_indexes:
        schema, name = index.split(".", 1)
        raw.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
    for _, definition in plan.definitions:
        raw.execute(definition.encode())  # 0001's own definition, read from the catalog (bytes: no placeholders)
    raw.execute("SET LOCAL search_path = public")  # where Alembic looks for, and creates, alembic_version
    MigrationContext.configure(conn).stamp(migrate.script_directory(), REVISION)
    cursor = raw.execute(
        "UPDATE public.api_keys SET is_active = false WHERE is_active AND key_hash = ANY(%s)", (list(PREDICTABLE_KEYS),)
    )
    raw.execute("SET LOCAL ROLE NONE")
    return cursor.rowcount


def adopt(target: DatabaseUrl, *, wait_seconds: float, progress: Progress | None = None) -> bool:
    """Adopt a seed-made database at `target` (admin login) to revision 0001; False when it is not one (nothing done).

    Raises DbopsError, having changed nothing, when its schema differs from 0001 in more than the seed's ways.
    """
    say = progress or (lambda _message: None)
    try:
        with migrate.migration_connection(target, wait_seconds=wait_seconds, as_owner=False) as conn, conn.begin():
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)  # SQLAlchemy's psycopg dialect, on a live connection
            if not _seed_made(raw):
                return False
            say(f"adopting a database made by the seed's script: comparing its schema with {IN_0001}")
            _run_0001_into_probe(conn, raw)
            plan = classify(*_schemas(raw))
            if plan.refused:
                raise DbopsError(refusal(plan.refused))  # rolls the transaction back: nothing changed
            deactivated = _apply(conn, raw, plan)
            left = compare(*_schemas(raw))
            if left:
                raise DbopsError(
                    f"adopting the database would leave it different from {IN_0001} "
                    f"({'; '.join(f'{d.kind} {d.name}' for d in left[:MAX_LISTED])}), so nothing was changed; "
                    "this is a bug in gaia-db, please report it with that list"
                )
            raw.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(PROBE)))
    except (SQLAlchemyError, psycopg.Error) as exc:
        raise DbopsError(
            f"adopting the seed-made database failed: {migrate.primary_reason(exc)}; nothing was changed"
        ) from None
    say(f"adopted at {REVISION}: tables and functions owned by {OWNER_ROLE}; {plan.summary()}")
    if deactivated:
        say(f"deactivated {deactivated} predictable admin API key{'s' if deactivated != 1 else ''} "
            "(sha256 of 'admin-key-<environment>'); a random one is issued")
    return True
