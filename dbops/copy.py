"""Moving an environment between databases (providers): `python -m dbops copy`.

    SOURCE_DATABASE_URL=postgresql://… DATABASE_URL=postgresql://… python -m dbops copy --environment staging \\
        --admin-email admin@staging.gaia.com

The operator stops the services' writes first (downtime is the whole copy). Then, in order:

1. Checks, with nothing changed yet: the two URLs name different databases; the source records a revision these
   migrations contain; the target is new, or at most at that revision, and holds nothing but what a release puts there
   (the admin user and its admin keys: a new stack's first `pulumi up` has released it already).
2. The target is released to the *source's* revision (`dbops.release`): schema, roles, grants. Roles come from the
   release, never from the dump; the release's admin seed and anything above are then emptied (TRUNCATE).
3. `pg_dump --format=directory --jobs N --data-only` of the source's public schema (no roles, owners or privileges in
   it), in the snapshot of a REPEATABLE READ transaction that also reads every table's row count and checksum: the
   figures describe exactly the rows dumped. `pg_restore --jobs N --data-only` into the target.
4. The target's counts and checksums, read in one snapshot, must equal the source's, table by table. On a failure in
   3 or 4 the copied rows are emptied again, so the copy can simply be run again.
5. The target is migrated to head and seeded like any release (GAIA_DB_ADMIN_API_KEY, when given, becomes the one
   active admin key: the new stack's `adminApiKey`).

No URL reaches a command line or the output: pg_dump and pg_restore get libpq's environment variables (PGHOST, …) and
a password file of their own (PGPASSFILE, mode 0600, removed afterwards).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic.util.exc import CommandError
from psycopg import sql

from dbops import migrate
from dbops.backup import _tool_error as tool_error
from dbops.backup import client_binary
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.release import release, validate
from dbops.seed import ADMIN_KEY_NAME, ADMIN_NAME
from dbops.urls import DatabaseUrl, parse_url

Progress = Callable[[str], None]
Conn = psycopg.Connection[tuple[object, ...]]

DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))
MAX_JOBS = 32
STAMP_TABLE = "alembic_version"  # the release sets it; never copied
# Rows a release leaves in a new database: its admin user and that user's admin keys. Nothing else may be discarded.
SEED_ROWS = {
    "users": sql.SQL("name IS DISTINCT FROM {}").format(sql.Literal(ADMIN_NAME)),
    "api_keys": sql.SQL("name IS DISTINCT FROM {} OR user_id NOT IN (SELECT id FROM public.users WHERE name = {})")
    .format(sql.Literal(ADMIN_KEY_NAME), sql.Literal(ADMIN_NAME)),
}
# Every value's text form is fixed by these, so both sides render a row alike whatever the servers' defaults.
TEXT_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 3",
    "SET LOCAL bytea_output = 'hex'",
)
# libpq's environment variable for each query parameter a DatabaseUrl may carry (dbops.urls.QUERY_PARAMETERS).
PARAMETER_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "hostaddr": "PGHOSTADDR",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
}


@dataclass(frozen=True)
class Fingerprint:
    """A table's row count and an order-independent checksum of its rows (the sum of each row's 64-bit md5 prefix,
    the columns taken in name order, so a different physical column order on the other side does not matter)."""

    rows: int
    checksum: str


@dataclass(frozen=True)
class CopyResult:
    source_revision: str
    revision: str
    tables: dict[str, int]
    jobs: int
    seconds: dict[str, float]
    service_urls: dict[str, str] = field(repr=False)
    passwords_changed: tuple[str, ...] = ()
    reader_url: str | None = field(default=None, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        rows = sum(self.tables.values())
        total = self.seconds["total"]
        output: dict[str, Any] = {
            "sourceRevision": self.source_revision,
            "revision": self.revision,
            "tables": self.tables,
            "rows": rows,
            "jobs": self.jobs,
            "seconds": self.seconds,
            "rowsPerSecond": round(rows / total) if total > 0 else None,
            "serviceUrls": self.service_urls,
            "passwordsChanged": list(self.passwords_changed),
        }
        if self.reader_url is not None:
            output["readerUrl"] = self.reader_url
        if self.admin_api_key is not None:
            output["adminApiKey"] = self.admin_api_key
        return output


# --- libpq's environment for pg_dump / pg_restore: nothing on the command line ----------------------------------


def _passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def libpq_environment(target: DatabaseUrl) -> Iterator[dict[str, str]]:
    """This process's environment without libpq's own variables, plus `target` as PGHOST, PGPORT, PGUSER,
    PGDATABASE, its query parameters, and a password file of its own (PGPASSFILE, 0600) removed on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=target.socket_dir or target.host or "", PGPORT=str(target.port), PGUSER=target.user,
               PGDATABASE=target.database, PGCONNECT_TIMEOUT="10")
    for name, value in target.query:
        if name in PARAMETER_ENV:
            env[PARAMETER_ENV[name]] = value
    fd, passfile = tempfile.mkstemp(prefix=".gaia-copy-", suffix=".pgpass")  # mode 0600, as libpq requires
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:*:{_passfile_field(target.password)}\n")
        env["PGPASSFILE"] = passfile
        yield env
    finally:
        Path(passfile).unlink(missing_ok=True)


def _run(tool: str, argv: list[str], env: Mapping[str, str]) -> None:
    completed = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise DbopsError(tool_error(tool, completed.stderr))


# --- reading both sides --------------------------------------------------------------------------------------------


def data_tables(conn: Conn) -> list[str]:
    """The ordinary tables of schema public that hold the environment's data (not the revision stamp)."""
    rows = conn.execute(
        "SELECT relname FROM pg_catalog.pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'p') AND relname <> %s ORDER BY relname",
        (STAMP_TABLE,),
    ).fetchall()
    return [str(row[0]) for row in rows]


def fingerprints(conn: Conn) -> dict[str, Fingerprint]:
    """Every data table's Fingerprint, read in the caller's transaction (REPEATABLE READ: one snapshot)."""
    for statement in TEXT_SETTINGS:
        conn.execute(statement)  # constant SQL
    result: dict[str, Fingerprint] = {}
    for table in data_tables(conn):
        columns = [str(row[0]) for row in conn.execute(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attname",
            (f"public.{table}",),
        )]
        row_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        found = conn.execute(
            sql.SQL("SELECT count(*), coalesce(sum(('x' || left(md5({}), 16))::bit(64)::bigint::numeric), 0)::text "
                    "FROM public.{}").format(row_text, sql.Identifier(table))
        ).fetchone()
        assert found is not None
        result[table] = Fingerprint(int(found[0]), str(found[1]))  # type: ignore[call-overload]
    return result


def _revision(conn: Conn) -> str | None:
    if conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
    return str(row[0]) if row else None


def _lineage(revision: str) -> list[str]:
    """`revision` and every revision before it, newest first; DbopsError when these migrations lack it."""
    try:
        script = migrate.script_directory()
        if script.get_revision(revision) is None:
            raise CommandError(revision)
        return [step.revision for step in script.iterate_revisions(revision, "base")]
    except CommandError:
        raise DbopsError(
            f"the source database is at revision {revision!r}, which these migrations do not contain (a newer release "
            "migrated it); copy with that release or a newer one"
        ) from None


def _foreign_rows(conn: Conn) -> list[str]:
    """Tables holding rows a release did not put there, as `table (N rows)`."""
    found = []
    for table in data_tables(conn):
        where = SEED_ROWS.get(table, sql.SQL("true"))
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM public.{} WHERE {}").format(sql.Identifier(table), where)
        ).fetchone()
        if row and row[0]:
            found.append(f"{table} ({row[0]} rows)")
    return found


def _not_empty(target: DatabaseUrl, foreign: list[str]) -> DbopsError:
    return DbopsError(
        f"the target database {target.database} at {target.location} already holds data ({', '.join(foreign)}), so "
        "nothing was copied; copy only into a new database, or one a release alone has touched"
    )


def _empty(conn: Conn, target: DatabaseUrl, *, check: bool) -> None:
    """TRUNCATE every data table in one transaction; with `check`, only if it holds nothing but the release's seed."""
    with conn.transaction():
        tables = data_tables(conn)
        if not tables:
            return
        listed = sql.SQL(", ").join(sql.SQL("public.{}").format(sql.Identifier(t)) for t in tables)
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(listed))
        if check and (foreign := _foreign_rows(conn)):
            raise _not_empty(target, foreign)
        conn.execute(sql.SQL("TRUNCATE {}").format(listed))


def _differences(source: Mapping[str, Fingerprint], target: Mapping[str, Fingerprint]) -> list[str]:
    found = []
    for table in sorted(set(source) | set(target)):
        a, b = source.get(table), target.get(table)
        if a is None or b is None:
            found.append(f"{table} exists only in the {'target' if a is None else 'source'}")
        elif a.rows != b.rows:
            found.append(f"{table} has {b.rows} rows, the source {a.rows}")
        elif a.checksum != b.checksum:
            found.append(f"{table}'s rows differ from the source's ({a.rows} rows each)")
    return found


# --- the copy ------------------------------------------------------------------------------------------------------


def _dump(source: DatabaseUrl, directory: Path, jobs: int, say: Progress) -> dict[str, Fingerprint]:
    """pg_dump of the source's data in a snapshot this transaction exports; returns the snapshot's fingerprints."""
    with connect(source, wait_seconds=10) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        argv = [client_binary("pg_dump"), "--format=directory", f"--jobs={jobs}", "--data-only", "--schema=public",
                f"--exclude-table=public.{STAMP_TABLE}", f"--snapshot={snapshot}", "--no-password",
                f"--file={directory}"]
        with libpq_environment(source) as env:
            dumping = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                say(f"dumping {source.database} at {source.location} with {jobs} jobs; counting its rows meanwhile")
                counted = fingerprints(conn)  # the same snapshot as the dump: exactly the rows dumped
                _, stderr = dumping.communicate()
            finally:
                if dumping.poll() is None:
                    dumping.kill()
                    dumping.wait()
        if dumping.returncode != 0:
            raise DbopsError(tool_error("pg_dump", stderr))
    return counted


def load_order(conn: Conn) -> list[list[str]]:
    """The data tables in waves a data-only load can run in parallel: each table after every table its foreign keys
    reference (pg_restore's parallel mode ignores them, and only a superuser may switch the checks off)."""
    tables = set(data_tables(conn))
    references: dict[str, set[str]] = {table: set() for table in tables}
    for child, parent in conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_catalog.pg_constraint c "
        "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace"
    ):
        child_name, parent_name = str(child).removeprefix("public."), str(parent).removeprefix("public.")
        if child_name in references and parent_name in tables and parent_name != child_name:
            references[child_name].add(parent_name)
    waves: list[list[str]] = []
    done: set[str] = set()
    while len(done) < len(tables):
        wave = sorted(t for t in tables - done if references[t] <= done)
        if not wave:
            raise DbopsError(
                f"the tables {', '.join(sorted(tables - done))} reference each other in a cycle, which a data-only "
                "copy cannot load in any order"
            )
        waves.append(wave)
        done.update(wave)
    return waves


TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA public (\S+) ")


def _restore(target: DatabaseUrl, directory: Path, jobs: int, waves: list[list[str]]) -> None:
    """pg_restore of the dump's data, wave by wave (load_order), each wave's tables in parallel; the sequences'
    values (and anything else in the archive) last."""
    pg_restore = client_binary("pg_restore")
    dbname = "dbname='{}'".format(target.database.replace("\\", "\\\\").replace("'", "\\'"))  # no secret
    with libpq_environment(target) as env:
        listed = subprocess.run([pg_restore, "--list", str(directory)], env=env, capture_output=True, text=True,
                                check=False)
        if listed.returncode != 0:
            raise DbopsError(tool_error("pg_restore", listed.stderr))
        entries = [line for line in listed.stdout.splitlines() if line and not line.startswith(";")]
        by_table = {m.group(1): line for line in entries if (m := TABLE_DATA.match(line))}
        batches = [[by_table[t] for t in wave if t in by_table] for wave in waves]
        batches.append([line for line in entries if not TABLE_DATA.match(line)])
        for batch in batches:
            if not batch:
                continue
            use_list = directory.parent / "use.list"
            use_list.write_text("".join(f"{line}\n" for line in batch))
            _run("pg_restore", [pg_restore, "--format=directory", f"--jobs={max(1, min(jobs, len(batch)))}",
                                "--data-only", "--exit-on-error", "--no-password", f"--dbname={dbname}",
                                f"--use-list={use_list}", str(directory)], env)


def _verify(target: DatabaseUrl, expected: Mapping[str, Fingerprint]) -> None:
    with connect(target, wait_seconds=10) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        found = fingerprints(conn)
    differences = _differences(expected, found)
    if differences:
        raise DbopsError(f"the copy does not match the source: {'; '.join(differences)}")


def copy(
    source_url: str,
    target_url: str,
    *,
    environment: str,
    admin_email: str,
    role_passwords: Mapping[str, str] | None = None,
    admin_api_key: str | None = None,
    jobs: int = DEFAULT_JOBS,
    wait_seconds: float = 30.0,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy every row of `source_url`'s database into `target_url`'s (both admin logins); see the module docstring."""
    say = progress or (lambda _message: None)
    started = time.monotonic()
    source, target = parse_url(source_url), parse_url(target_url)
    validate(environment, admin_email)
    if not 1 <= jobs <= MAX_JOBS:
        raise DbopsError(f"--jobs {jobs} is not allowed; use 1 to {MAX_JOBS}")
    if (source.location, source.database) == (target.location, target.database):
        raise DbopsError(
            f"SOURCE_DATABASE_URL and DATABASE_URL both name database {source.database} at {source.location}; "
            "DATABASE_URL is the new (target) database"
        )

    # 1. Checks: nothing is changed before they pass.
    with connect(source, wait_seconds=wait_seconds, progress=say) as conn:
        source_revision = _revision(conn)
    if source_revision is None:
        raise DbopsError(
            f"the source database {source.database} at {source.location} records no gaia-db revision "
            "(no alembic_version); release it first (python -m dbops release), then copy"
        )
    lineage = _lineage(source_revision)
    with connect(target, wait_seconds=wait_seconds, progress=say) as conn:
        target_revision = _revision(conn)
        foreign = _foreign_rows(conn)
    if target_revision is not None and target_revision not in lineage:
        raise DbopsError(
            f"the target database is at revision {target_revision}, newer than the source's {source_revision}, so "
            "nothing was copied; release the source to head first (a pulumi up of its stack), then copy"
        )
    if foreign:
        raise _not_empty(target, foreign)

    # 2. The target gets the source's revision, roles and grants from the release; its seed rows are emptied.
    say(f"releasing the target {target.database} at {target.location} to the source's revision {source_revision}")
    first = release(target_url, environment=environment, admin_email=admin_email, role_passwords=role_passwords,
                    wait_seconds=wait_seconds, progress=say, revision=source_revision)
    with connect(target, wait_seconds=wait_seconds) as conn:
        _empty(conn, target, check=True)
        waves = load_order(conn)
    seconds: dict[str, float] = {"release": round(time.monotonic() - started, 3)}

    # 3., 4. Dump, restore, verify; on failure the copied rows go again.
    workdir = Path(tempfile.mkdtemp(prefix="gaia-copy-"))
    try:
        mark = time.monotonic()
        expected = _dump(source, workdir / "dump", jobs, say)
        seconds["dump"] = round(time.monotonic() - mark, 3)
        total = sum(f.rows for f in expected.values())
        say(f"restoring {total} rows of {len(expected)} tables into {target.database} with {jobs} jobs")
        mark = time.monotonic()
        try:
            _restore(target, workdir / "dump", jobs, waves)
            seconds["restore"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            _verify(target, expected)
            seconds["verify"] = round(time.monotonic() - mark, 3)
        except BaseException as exc:
            emptied = _empty_quietly(target)
            if isinstance(exc, DbopsError):
                fate = "the copied rows were removed again" if emptied else "empty its tables before copying again"
                raise DbopsError(f"{exc}; {fate}") from None
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"verified {total} rows: every table's count and checksum match the source's")

    # 5. Head and the admin seed, like any release.
    mark = time.monotonic()
    final = release(target_url, environment=environment, admin_email=admin_email, admin_api_key=admin_api_key,
                    wait_seconds=wait_seconds, progress=say)
    seconds["migrate"] = round(time.monotonic() - mark, 3)
    seconds["total"] = round(time.monotonic() - started, 3)
    return CopyResult(
        source_revision=source_revision,
        revision=final.revision,
        tables={table: f.rows for table, f in expected.items()},
        jobs=jobs,
        seconds=seconds,
        service_urls={**first.service_urls, **final.service_urls},
        passwords_changed=tuple(dict.fromkeys((*first.passwords_changed, *final.passwords_changed))),
        reader_url=final.reader_url or first.reader_url,
        admin_api_key=final.admin_api_key,
    )


def _empty_quietly(target: DatabaseUrl) -> bool:
    try:
        with connect(target, wait_seconds=10) as conn:
            _empty(conn, target, check=False)
    except (psycopg.Error, DbopsError):
        return False
    return True
