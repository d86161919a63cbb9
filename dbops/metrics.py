"""The seed's three monitoring queries: connections per database, table sizes, slow queries.

Differences from the seed, on purpose:
- table sizes use the table's oid (the seed's `schemaname||'.'||tablename` breaks on names that need quoting) and
  cover every non-system schema, not only `public`;
- slow queries read `mean_exec_time`/`total_exec_time` on PostgreSQL 13 and later and `mean_time`/`total_time`
  before (pg_stat_statements renamed them in 13), and name the database each statement ran in;
- when pg_stat_statements is not loaded (shared_preload_libraries) or its extension is not created in this database,
  the report says which, and how to fix it on each provider, instead of failing. Metrics never creates the extension
  itself: it is a read-only command, and `CREATE EXTENSION pg_stat_statements` needs a superuser (or rds_superuser /
  cloudsqlsuperuser), so the operator runs it once per database.

Statement texts of other users show as `<insufficient privilege>` unless the login has pg_read_all_stats
(pg_monitor); the local provider grants pg_monitor to its admin.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from dbops.errors import DbopsError
from dbops.health import _connect

DEFAULT_SLOW_MS = 100.0
SLOW_LIMIT = 10
QUERY_WIDTH = 80

_CONNECTIONS = """
    SELECT coalesce(datname, '(background)'), count(*)::int, max(backend_start)
    FROM pg_stat_activity
    GROUP BY datname
    ORDER BY count(*) DESC, 1
"""
_TABLES = """
    SELECT n.nspname, c.relname, pg_total_relation_size(c.oid)::bigint, pg_size_pretty(pg_total_relation_size(c.oid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
      AND n.nspname NOT LIKE 'pg\\_temp\\_%'
    ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2
"""
_SLOW = """
    SELECT d.datname, s.query, s.{mean}::float8, s.calls::bigint, s.{total}::float8
    FROM {schema}.pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
    WHERE s.{mean} > %s
    ORDER BY s.{mean} DESC
    LIMIT {limit}
"""

ENABLE_HINTS: dict[str, str] = {
    "aws": "RDS: the parameter group gaia-<env> (components/aws.py) sets shared_preload_libraries = "
    "pg_stat_statements with apply method pending-reboot; reboot once with `aws rds reboot-db-instance "
    "--db-instance-identifier gaia-<env>`, then run CREATE EXTENSION pg_stat_statements; as the admin "
    "(rds_superuser)",
    "gcp": "Cloud SQL: pg_stat_statements is preloaded by Cloud SQL; run CREATE EXTENSION pg_stat_statements; as the "
    "admin (cloudsqlsuperuser) in this database",
    "fly": "Fly Postgres (postgres-flex): `fly postgres config update --app gaia-db-<env> --shared-preload-libraries "
    "repmgr,pg_stat_statements --yes` (repmgr must stay in the list), then `fly postgres restart --app "
    "gaia-db-<env>`, then CREATE EXTENSION pg_stat_statements; as postgres",
    "local": "local: the local provider preloads it and creates the extension; elsewhere set shared_preload_libraries "
    "= 'pg_stat_statements' in postgresql.conf, restart, then CREATE EXTENSION pg_stat_statements; as a superuser",
}

Conn = psycopg.Connection[tuple[object, ...]]


def _statements_status(conn: Conn) -> tuple[str, str | None]:
    """("ok", schema) / ("not-created", None) / ("not-available", None) for this database."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row is not None:
        return "ok", str(row[0])
    available = conn.execute("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_stat_statements')")
    return ("not-created" if available.fetchone() == (True,) else "not-available"), None


def _slow_queries(conn: Conn, schema: str, slow_ms: float) -> list[dict[str, Any]]:
    version = conn.info.server_version
    mean, total = ("mean_exec_time", "total_exec_time") if version >= 130000 else ("mean_time", "total_time")
    query = sql.SQL(_SLOW).format(
        mean=sql.Identifier(mean), total=sql.Identifier(total),
        schema=sql.Identifier(schema), limit=sql.Literal(SLOW_LIMIT),
    )
    rows: list[Any] = conn.execute(query, (slow_ms,)).fetchall()
    return [
        {"database": db, "query": text, "mean_ms": round(float(m), 3), "calls": int(calls),
         "total_ms": round(float(t), 3)}
        for db, text, m, calls, t in rows
    ]


def collect(url: str, *, slow_ms: float = DEFAULT_SLOW_MS, timeout: float = 10.0,
            provider: str | None = None) -> dict[str, Any]:
    """The three reports as one dict; raises DbopsError only when the database cannot be asked at all."""
    try:
        with _connect(url, timeout) as conn:
            max_conn = conn.execute("SELECT current_setting('max_connections')::int").fetchone()
            activity: list[Any] = conn.execute(_CONNECTIONS).fetchall()
            connections = [
                {"database": db, "connections": n, "newest_connection": newest.isoformat() if newest else None}
                for db, n, newest in activity
            ]
            tables = [
                {"schema": schema, "table": table, "bytes": size, "size": pretty}
                for schema, table, size, pretty in conn.execute(_TABLES)
            ]
            status, schema = _statements_status(conn)
            statements: dict[str, Any] = {"status": status, "threshold_ms": slow_ms}
            slow: list[dict[str, Any]] | None = None
            if schema is not None:
                try:
                    with conn.transaction():
                        slow = _slow_queries(conn, schema, slow_ms)
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    status = "not-loaded"  # created, but the library is not in shared_preload_libraries
                statements["status"] = status
            if status != "ok":
                statements["message"] = {
                    "not-loaded": "pg_stat_statements is created in this database but not loaded "
                    "(it must be in shared_preload_libraries, which needs a restart)",
                    "not-created": "pg_stat_statements is not created in this database "
                    "(CREATE EXTENSION pg_stat_statements; as a superuser or the provider's admin)",
                    "not-available": "pg_stat_statements is not installed on this server (the postgresql-contrib "
                    "package provides it)",
                }[status]
                hints = ENABLE_HINTS if provider is None else {provider: ENABLE_HINTS[provider]}
                statements["how_to_enable"] = hints
    except psycopg.errors.QueryCanceled:
        raise DbopsError(f"the metrics queries did not finish within {timeout:g} s (statement_timeout)") from None
    except psycopg.Error as exc:
        first = exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DbopsError(f"the metrics queries failed: {first}") from None
    return {
        "max_connections": max_conn[0] if max_conn else None,
        "connections": connections,
        "tables": tables,
        "slow_queries": slow,
        "pg_stat_statements": statements,
    }


def _table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    right = right or set()
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUERY_WIDTH else flat[: QUERY_WIDTH - 1] + "…"


def render(report: dict[str, Any]) -> str:
    """The report as readable tables."""
    out: list[str] = []
    total = sum(c["connections"] for c in report["connections"])
    out.append(f"Connections ({total} of max_connections {report['max_connections']})")
    out += _table(
        ["database", "connections", "newest connection"],
        [[c["database"], str(c["connections"]), c["newest_connection"] or "-"] for c in report["connections"]],
        right={1},
    )
    out.append("")
    out.append("Table sizes (with indexes and TOAST)")
    if report["tables"]:
        out += _table(["schema", "table", "size"], [[t["schema"], t["table"], t["size"]] for t in report["tables"]],
                      right={2})
    else:
        out.append("(no tables)")
    out.append("")
    stats = report["pg_stat_statements"]
    out.append(f"Slow queries (mean > {stats['threshold_ms']:g} ms, top {SLOW_LIMIT})")
    if stats["status"] == "ok":
        slow = report["slow_queries"] or []
        if slow:
            out += _table(
                ["mean ms", "calls", "total ms", "database", "query"],
                [[f"{q['mean_ms']:.1f}", str(q["calls"]), f"{q['total_ms']:.1f}", q["database"] or "-",
                  _one_line(q["query"] or "")] for q in slow],
                right={0, 1, 2},
            )
        else:
            out.append("(none)")
    else:
        out.append(f"unavailable: {stats['message']}.")
        out.append("To enable it:")
        out += [f"  - {hint}" for hint in stats["how_to_enable"].values()]
    return "\n".join(out)
