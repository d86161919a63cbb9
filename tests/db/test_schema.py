"""The migrated schema: the seed's tables exactly, the fixes on top, models in step, reversible."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from dbhelpers import HEAD, ROOT, query, schema_snapshot
from pgserver import PgServer

from dbops import migrate, revisions, seed
from dbops.errors import DbopsError
from dbops.names import OWNER_ROLE
from dbops.release import ReleaseResult, release
from dbops.urls import parse_url

SEED_SQL = (Path(__file__).parent / "seed_schema.sql").read_text()


@pytest.fixture
def seed_url(pg: PgServer) -> str:
    """A database holding the seed document's DDL, applied as is."""
    url: str = pg.create_database()[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_SQL)
    return url


def test_schema_equals_the_seed_except_the_documented_changes(
    released: tuple[str, ReleaseResult], seed_url: str
) -> None:
    ours, theirs = schema_snapshot(released[0]), schema_snapshot(seed_url)

    assert ours["columns"] == theirs["columns"]  # names, order, types (with lengths), NOT NULL, defaults
    assert len(ours["columns"]) == 5 + 10 + 9 + 11
    assert ours["constraints"] == theirs["constraints"]  # PKs, UNIQUEs, FKs with their ON DELETE rules
    assert (
        "api_keys",
        "api_keys_user_id_fkey",
        "f",
        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
    ) in (ours["constraints"])

    # Indexes: the seed's, minus the one that duplicates UNIQUE (key_hash), plus conversation history.
    seed_indexes = {row[1]: row for row in theirs["indexes"]}
    our_indexes = {row[1]: row for row in ours["indexes"]}
    assert set(seed_indexes) - set(our_indexes) == {"idx_api_keys_key_hash"}
    assert set(our_indexes) - set(seed_indexes) == {"idx_chat_messages_conversation_created"}
    for name in set(seed_indexes) & set(our_indexes):
        assert our_indexes[name] == seed_indexes[name]
    assert our_indexes["idx_chat_messages_conversation_created"][2:] == (
        "CREATE INDEX idx_chat_messages_conversation_created ON public.chat_messages "
        "USING btree (conversation_id, created_at)",
        True,
    )

    assert theirs["triggers"] == []
    assert [(t[0], t[1]) for t in ours["triggers"]] == [
        ("api_keys", "api_keys_set_updated_at"),
        ("assets", "assets_set_updated_at"),
        ("users", "users_set_updated_at"),
    ]
    assert theirs["functions"] == [("get_shard_for_user", "user_id uuid", "integer")]
    assert ours["functions"] == [*theirs["functions"], ("set_updated_at", "", "trigger")]


def test_every_object_is_owned_by_the_owner_role(released: tuple[str, ReleaseResult]) -> None:
    owners = query(
        released[0],
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "UNION SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
    )
    assert owners == [(OWNER_ROLE,)]


def test_shard_is_never_negative_and_matches_python(released: tuple[str, ReleaseResult], seed_url: str) -> None:
    ids = [uuid.uuid4() for _ in range(3000)] + [
        uuid.UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"),
        uuid.UUID("80000000-0000-4000-8000-000000000000"),
        uuid.UUID("7fffffff-0000-4000-8000-000000000000"),
        uuid.UUID("00000000-0000-4000-8000-000000000000"),
    ]
    sql = "SELECT u, get_shard_for_user(u) FROM unnest(%s::uuid[]) AS u"
    ours = query(released[0], sql, (ids,))
    assert {u: shard for u, shard in ours} == {u: int(u.hex[:8], 16) % 4 for u in ids}
    assert {shard for _, shard in ours} == {0, 1, 2, 3}
    # The same check catches the seed's function (so it would catch a regression to ::int).
    assert any(shard < 0 for _, shard in query(seed_url, sql, (ids,)))


def test_updated_at_follows_updates(released: tuple[str, ReleaseResult]) -> None:
    url = released[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (email, name, created_at, updated_at) VALUES ('t@x.io', 'T', '2001-01-01', '2001-01-01')"
        )
        user_id = conn.execute("SELECT id FROM users WHERE email = 't@x.io'").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO api_keys (user_id, key_hash, updated_at) VALUES (%s, 'h', '2001-01-01')", (user_id,))
        conn.execute(
            "INSERT INTO assets (user_id, type, name, updated_at) VALUES (%s, 'img', 'a', '2001-01-01')", (user_id,)
        )
        conn.execute("UPDATE users SET name = 'T2' WHERE id = %s", (user_id,))
        conn.execute("UPDATE api_keys SET name = 'k' WHERE user_id = %s", (user_id,))
        conn.execute("UPDATE assets SET status = 'done' WHERE user_id = %s", (user_id,))
        for table, column in (("users", "id"), ("api_keys", "user_id"), ("assets", "user_id")):
            row = conn.execute(
                f"SELECT localtimestamp - updated_at < interval '1 minute' FROM {table} WHERE {column} = %s",
                (user_id,),
            ).fetchone()
            assert row == (True,), f"{table}.updated_at was not set by the trigger"
        created = conn.execute("SELECT created_at FROM users WHERE id = %s", (user_id,)).fetchone()
        assert created is not None and created[0].year == 2001  # only updated_at moves


def test_key_hash_matches_sql_sha256(released: tuple[str, ReleaseResult]) -> None:
    keys = ["gaia_abc", "clé-ünïcødé-🔑", ""]
    rows = query(
        released[0], "SELECT k, encode(sha256(convert_to(k, 'UTF8')), 'hex') FROM unnest(%s::text[]) k", (keys,)
    )
    assert {k: h for k, h in rows} == {k: seed.key_hash(k) for k in keys}


def _alembic_check(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url.replace("postgresql://", "postgres://", 1)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_alembic_check_passes_and_catches_drift(released: tuple[str, ReleaseResult]) -> None:
    url = released[0]
    ok = _alembic_check(url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "No new upgrade operations detected" in ok.stdout + ok.stderr

    with psycopg.connect(url, autocommit=True) as conn:  # drift: a default the models do not know
        conn.execute(f"SET ROLE {OWNER_ROLE}")
        conn.execute("ALTER TABLE assets ALTER COLUMN status SET DEFAULT 'queued'")
    drift = _alembic_check(url)
    assert drift.returncode != 0
    assert "assets" in drift.stdout + drift.stderr and "status" in drift.stdout + drift.stderr


def test_head_revision_needs_no_database_nor_working_directory_nor_alembic(tmp_path: Path) -> None:
    assert revisions.head_revision() == HEAD == migrate.script_directory().get_heads()[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The program reads the head on every preview: it must not pay for importing alembic, SQLAlchemy or psycopg.
    script = ("import sys; from dbops.revisions import head_revision; print(head_revision()); "
              "print(sorted(m for m in ('alembic', 'sqlalchemy', 'psycopg') if m in sys.modules))")
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [HEAD, "[]"]


def test_head_revision_follows_the_chain_and_refuses_a_fork(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, down in (("a", None), ("b", "a"), ("c", "b")):
        (versions / f"{name}.py").write_text(f"revision = {name!r}\ndown_revision = {down!r}\n")
    assert revisions.head_revision(versions) == "c"
    (versions / "d.py").write_text("revision: str = 'd'\ndown_revision = 'b'\n")
    with pytest.raises(DbopsError, match="exactly one head revision, found 2: c, d"):
        revisions.head_revision(versions)


def test_downgrade_to_base_and_release_again_gives_the_identical_schema(released: tuple[str, ReleaseResult]) -> None:
    url = released[0]
    acl = "SELECT relname, relacl::text FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1"
    before, before_acl = schema_snapshot(url), query(url, acl)

    migrate.downgrade(parse_url(url), target="base")
    empty = schema_snapshot(url)
    assert all(not rows for rows in empty.values()), empty
    assert query(url, "SELECT count(*) FROM alembic_version") == [(0,)]

    again = release(url, environment="dev", admin_email="admin@dev.gaia.com")
    assert again.applied == ("0001_seed_schema", HEAD)
    assert schema_snapshot(url) == before
    assert query(url, acl) == before_acl  # grants, column grants included


def test_invalid_leftover_of_the_concurrent_index_is_rebuilt(released: tuple[str, ReleaseResult]) -> None:
    url = released[0]
    migrate.downgrade(parse_url(url), target="0001_seed_schema")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {OWNER_ROLE}")
        conn.execute("INSERT INTO users (id, email) VALUES ('11111111-1111-4111-8111-111111111111', 'u@x.io')")
        for _ in range(2):  # duplicates make a UNIQUE concurrent build fail half-way: an INVALID index remains
            conn.execute(
                "INSERT INTO chat_messages (user_id, conversation_id, role, content, created_at) VALUES "
                "('11111111-1111-4111-8111-111111111111', '22222222-2222-4222-8222-222222222222', 'user', 'hi', "
                "'2020-01-01')"
            )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY idx_chat_messages_conversation_created "
                "ON chat_messages (conversation_id, created_at)"
            )
    index = (
        "SELECT indisvalid, indisunique FROM pg_index "
        "WHERE indexrelid = 'idx_chat_messages_conversation_created'::regclass"
    )
    assert query(url, index) == [(False, True)]

    result = release(url, environment="dev", admin_email="admin@dev.gaia.com")
    assert result.applied == (HEAD,)
    assert query(url, index) == [(True, False)]
