"""`dbops diff-schema`: no drift between two databases released to head; every planted difference found."""

from __future__ import annotations

import json

import psycopg
from cli_runner import run_dbops
from pgserver import PgServer

from dbops import locking, migrate, revisions
from dbops.release import release
from dbops.schema_diff import compare, snapshot
from dbops.urls import parse_url

EMAIL = "admin@dev.gaia.com"


def released(pg: PgServer) -> tuple[str, str]:
    dbname, url = pg.create_database()
    release(url, environment="dev", admin_email=EMAIL)
    return dbname, url


def test_two_databases_at_head_do_not_drift(pg: PgServer) -> None:
    (_, a), (_, b) = released(pg), released(pg)
    done = run_dbops("diff-schema", "env:A_URL", "env:B_URL", env={"A_URL": a, "B_URL": b})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    head = revisions.head_revision()
    assert lines[0].endswith(f"revision {head}") and lines[1].endswith(f"revision {head}")
    # 4 tables + alembic_version; 35 columns + version_num; 3 set_updated_at triggers, their function and the shard one.
    assert lines[2] == ("no drift: 5 relations, 36 columns, 10 constraints, 15 indexes, 2 functions, 3 triggers, "
                        "0 extensions identical")
    snap = snapshot(a)
    assert {"public.users", "public.api_keys", "public.chat_messages", "public.assets"} <= set(snap.objects["relation"])
    assert snap.objects["index"] and snap.objects["function"] and snap.objects["trigger"]
    assert snap.objects["column"]["public.users.email"] == {
        "type": "character varying(255)", "default": None, "nullable": False, "identity": None, "generated": None}


def test_every_planted_difference_is_reported(pg: PgServer) -> None:
    (_, a), (b_name, b) = released(pg), released(pg)
    with psycopg.connect(pg.url(dbname=b_name), autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute("ALTER TABLE users ADD COLUMN nickname text")  # column only in B
        conn.execute("ALTER TABLE users ALTER COLUMN name SET NOT NULL")  # nullability
        conn.execute("ALTER TABLE assets ALTER COLUMN status SET DEFAULT 'ready'")  # default
        conn.execute("ALTER TABLE chat_messages ALTER COLUMN role TYPE varchar(80)")  # type
        conn.execute("DROP INDEX idx_chat_messages_user_id")  # index only in A
        conn.execute("ALTER TABLE assets ADD CONSTRAINT assets_type_check CHECK (type <> '')")  # constraint only in B
        conn.execute("CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY)")  # table only in B
        conn.execute("CREATE FUNCTION audit_noop() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
        conn.execute("CREATE TRIGGER users_audit BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION audit_noop()")
        conn.execute("UPDATE alembic_version SET version_num = '0001_seed_schema'")  # revision
    done = run_dbops("diff-schema", "env:A", "env:B", env={"A": a, "B": b})
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout
    expected = [
        "revision    alembic_version: A is at 0002_chat_history_index, B at 0001_seed_schema",
        "relation    public.audit: only in B (kind table)",
        "column      public.users.nickname: only in B (type text, nullable True)",
        "column      public.users.name: nullable True in A, False in B",
        "column      public.assets.status: default 'pending'::character varying in A, 'ready'::character varying in B",
        "column      public.chat_messages.role: type character varying(50) in A, character varying(80) in B",
        "constraint  public.assets.assets_type_check: only in B (CHECK",
        "index       public.idx_chat_messages_user_id: only in A (CREATE INDEX idx_chat_messages_user_id ON "
        "public.chat_messages USING btree (user_id))",
        "function    public.audit_noop(): only in B (CREATE OR REPLACE FUNCTION public.audit_noop()",
        "trigger     public.users.users_audit: only in B (CREATE TRIGGER users_audit BEFORE INSERT ON public.users",
    ]
    for line in expected:
        assert line in out, f"missing: {line}\n{out}"
    assert out.rstrip().splitlines()[-1].startswith("DRIFT: ")
    # A function body change is a difference too.
    with psycopg.connect(pg.url(dbname=b_name), autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute("CREATE OR REPLACE FUNCTION get_shard_for_user(user_id uuid) RETURNS integer LANGUAGE sql "
                     "AS $$ SELECT 0 $$")
    diffs = compare(snapshot(a), snapshot(b))
    changed = [d for d in diffs if d.kind == "function" and d.name == "public.get_shard_for_user(user_id uuid)"]
    assert len(changed) == 1 and changed[0].text.startswith("A: CREATE OR REPLACE FUNCTION")
    report = json.loads(run_dbops("diff-schema", "--json", "env:A", "env:B", env={"A": a, "B": b}).stdout)
    assert report["drift"] is True and report["b"]["revision"] == "0001_seed_schema"
    assert len(report["differences"]) == len(diffs)


def test_older_revision_after_a_real_downgrade_is_drift(pg: PgServer) -> None:
    (_, a), (_, b) = released(pg), released(pg)
    with psycopg.connect(b, autocommit=True) as conn, locking.release_lock(conn):
        migrate.downgrade(parse_url(b), target="0001_seed_schema")
    diffs = compare(snapshot(a), snapshot(b))
    kinds = {d.kind for d in diffs}
    assert "revision" in kinds and "index" in kinds  # 0002 added an index; B no longer has it


def test_a_password_in_argv_is_refused(pg: PgServer) -> None:
    _, a = released(pg)
    done = run_dbops("diff-schema", a, "env:A", env={"A": a})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: URL_A holds a password, which would be visible to every user")
    assert "admin-password" not in done.stderr
    done = run_dbops("diff-schema", "env:NOPE", "env:A", env={"A": a})
    assert done.returncode == 1 and done.stderr == "error: URL_A: the environment variable NOPE is not set\n"
    # A password in the query string is no way around it.
    host = a.split("@", 1)[1]
    done = run_dbops("diff-schema", f"postgresql://someone@{host}?password=SECRET", "env:A", env={"A": a})
    assert done.returncode == 1 and done.stdout == "" and "SECRET" not in done.stderr
    assert done.stderr.startswith("error: URL_A: the database URL has a password query parameter; ")
