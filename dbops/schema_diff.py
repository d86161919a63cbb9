"""Schema drift between two databases: the seed's "Migration Path" check, done from the catalogs.

Compared, in every schema but PostgreSQL's own (objects that belong to an extension are left to the extension):
relations (tables, views, sequences, with their kind and view definition), columns (type, default, nullability,
identity / generated), constraints (`pg_get_constraintdef`), indexes (`pg_get_indexdef`), functions and procedures
(`pg_get_functiondef`), triggers (`pg_get_triggerdef`), extensions (version), and the Alembic revision of each.

Not compared: ownership and privileges (the release sets them), statistics and data. `pg_stat_statements` is not
counted as drift: it is a monitoring extension that operators create per server (see `dbops metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.names import POOLER_SCHEMA
from dbops.urls import parse_url

IGNORED_EXTENSIONS = frozenset({"plpgsql", "pg_stat_statements"})
KINDS = ("relation", "column", "constraint", "index", "function", "trigger", "extension")

# The local pooler's lookup function (dbops.names.POOLER_SCHEMA) is the stack's plumbing, not the application's schema.
_USER_SCHEMA = (f"n.nspname NOT IN ('pg_catalog', 'information_schema', '{POOLER_SCHEMA}') "
                "AND n.nspname NOT LIKE 'pg\\_%'")
_NOT_EXTENSION = "NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
RELKIND = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "S": "sequence",
           "f": "foreign table"}

# Constant SQL assembled from constants above (no input): hence the S608 exemptions.
QUERIES: dict[str, str] = {
    "relation": f"""
        SELECT n.nspname || '.' || c.relname, c.relkind::text,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='c.oid')}
    """,  # noqa: S608
    "column": f"""
        SELECT n.nspname || '.' || c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
               pg_get_expr(ad.adbin, ad.adrelid), NOT a.attnotnull, a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='c.oid')}
    """,  # noqa: S608
    "constraint": f"""
        SELECT n.nspname || '.' || c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='c.oid')}
    """,  # noqa: S608
    "index": f"""
        SELECT n.nspname || '.' || ic.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
        WHERE {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='i.indrelid')}
    """,  # noqa: S608
    "function": f"""
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.prokind IN ('f', 'p') AND {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='p.oid')}
    """,  # noqa: S608
    "trigger": f"""
        SELECT n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT t.tgisinternal AND {_USER_SCHEMA} AND {_NOT_EXTENSION.format(oid='c.oid')}
    """,  # noqa: S608
    "extension": "SELECT extname, extversion FROM pg_extension",
}


@dataclass
class Snapshot:
    label: str  # "database db at host:port"
    revision: str | None
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> name -> description


@dataclass(frozen=True)
class Difference:
    kind: str
    name: str
    text: str  # one line: what differs

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "difference": self.text}


def _describe(kind: str, row: tuple[Any, ...]) -> Any:
    if kind == "relation":
        relkind, viewdef = row[1], row[2]
        return {"kind": RELKIND.get(relkind, relkind), "definition": " ".join(viewdef.split()) if viewdef else None}
    if kind == "column":
        _, type_, default, nullable, identity, generated = row
        return {"type": type_, "default": default, "nullable": bool(nullable),
                "identity": {"a": "always", "d": "by default"}.get(identity or ""),
                "generated": "stored" if generated == "s" else None}
    return row[1]


def read_snapshot(conn: psycopg.Connection[Any], label: str) -> Snapshot:
    """The schema as `conn` sees it, read in the caller's transaction (so one consistent view when it is one).

    The caller sets `search_path = pg_catalog`, so `pg_get_*` output qualifies every non-catalog name.
    """
    revision = None
    if conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone() == (True,):
        row = conn.execute("SELECT string_agg(version_num, ',') FROM public.alembic_version").fetchone()
        revision = str(row[0]) if row and row[0] else None
    snap = Snapshot(label=label, revision=revision)
    for kind, query in QUERIES.items():
        snap.objects[kind] = {str(row[0]): _describe(kind, row) for row in conn.execute(query)}
    for name in IGNORED_EXTENSIONS:
        snap.objects["extension"].pop(name, None)
    return snap


def snapshot(url: str, *, wait_seconds: float = 10.0) -> Snapshot:
    target = parse_url(url)
    label = f"database {target.database} at {target.location}"
    try:
        with connect(target, wait_seconds=wait_seconds) as conn:
            conn.execute("SET statement_timeout = '60s'")
            conn.execute("SET search_path = pg_catalog")  # pg_get_* output qualifies every non-catalog name
            return read_snapshot(conn, label)
    except psycopg.Error as exc:
        raise DbopsError(
            f"reading the schema of {label} failed: {exc.diag.message_primary or type(exc).__name__}"
        ) from None


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v is not None and k != "definition") or "-"
    return " ".join(str(value).split())


def compare(a: Snapshot, b: Snapshot, *, names: tuple[str, str] = ("A", "B")) -> list[Difference]:
    """Every difference from `a` to `b`; `names` are how the lines call the two sides."""
    na, nb = names
    diffs: list[Difference] = []
    if a.revision != b.revision:
        diffs.append(Difference("revision", "alembic_version", f"{na} is at {a.revision or 'no revision'}, "
                                                               f"{nb} at {b.revision or 'no revision'}"))
    for kind in KINDS:
        left, right = a.objects.get(kind, {}), b.objects.get(kind, {})
        for name in sorted(set(left) | set(right)):
            if name not in right:
                diffs.append(Difference(kind, name, f"only in {na} ({_short(left[name])})"))
            elif name not in left:
                diffs.append(Difference(kind, name, f"only in {nb} ({_short(right[name])})"))
            elif left[name] != right[name]:
                if isinstance(left[name], dict):
                    parts = [f"{key} {left[name][key]!s} in {na}, {right[name][key]!s} in {nb}"
                             for key in left[name] if left[name][key] != right[name].get(key)]
                    diffs.append(Difference(kind, name, "; ".join(parts)))
                else:
                    diffs.append(Difference(kind, name, f"{na}: {_short(left[name])} | {nb}: {_short(right[name])}"))
    return diffs


def render(a: Snapshot, b: Snapshot, diffs: list[Difference]) -> str:
    lines = [f"A: {a.label}, revision {a.revision or '(none)'}", f"B: {b.label}, revision {b.revision or '(none)'}"]
    if not diffs:
        counts = ", ".join(f"{len(a.objects[k])} {'indexes' if k == 'index' else k + 's'}" for k in KINDS)
        lines.append(f"no drift: {counts} identical")
    else:
        width = max(len(d.kind) for d in diffs)
        lines += [f"{d.kind.ljust(width)}  {d.name}: {d.text}" for d in diffs]
        lines.append(f"DRIFT: {len(diffs)} difference{'s' if len(diffs) != 1 else ''}")
    return "\n".join(lines)
