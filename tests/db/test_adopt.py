"""The release adopts a database the seed's own script made, without losing or rewriting a row; anything else that
differs from revision 0001 is refused with nothing changed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_runner import Background, error_line, run_dbops
from dbhelpers import ADMIN_EMAIL, HEAD, PASSWORDS, query, release_args, release_env
from matrix import ALLOWED, insert_sample_rows, rights
from pgserver import PgServer
from seedmade import SEED_KEY_ERROR, fill, fingerprints, render, run_seed_script

from dbops import seed
from dbops.errors import DbopsError
from dbops.names import OWNER_ROLE, SERVICES
from dbops.release import release
from dbops.schema_diff import snapshot

ADMIN_KEYS = "SELECT key_hash, is_active FROM api_keys WHERE name = 'Admin Key' ORDER BY is_active, key_hash"
OWNERS = (
    "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
    "UNION SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
)


def seed_made(pg: PgServer, *, users: int = 2000) -> tuple[str, str, str]:
    """(admin URL, superuser URL, the script's stderr) of a new database made by the seed's script, then filled."""
    dbname, url = pg.create_database()
    made = run_seed_script(url, "dev", ADMIN_EMAIL)
    if users:
        fill(url, users)
    return url, pg.url(dbname=dbname), made.stderr


def run(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def fresh(pg: PgServer) -> str:
    _, url = pg.create_database()
    release(url, environment="dev", admin_email=ADMIN_EMAIL)
    return url


def no_drift(a: str, b: str) -> str:
    done = run_dbops("diff-schema", "env:A", "env:B", env={"A": a, "B": b})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_release_adopts_a_seed_made_database_without_touching_a_row(pg: PgServer) -> None:
    url, su_url, script_errors = seed_made(pg)
    # As in every environment the script made: the key insert failed and psql went on, so the admin has no key.
    assert SEED_KEY_ERROR in script_errors
    [(admin_id,)] = query(su_url, "SELECT id FROM users WHERE email = %s", (ADMIN_EMAIL,))
    assert query(su_url, "SELECT count(*) FROM api_keys WHERE user_id = %s", (admin_id,)) == [(0,)]
    assert query(su_url, "SELECT to_regclass('public.alembic_version')") == [(None,)]

    before = fingerprints(su_url)
    said: list[str] = []
    result = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, progress=said.append)
    assert result.admin_api_key is not None
    after = fingerprints(su_url, leave_out_keys=(seed.key_hash(result.admin_api_key),))
    print("\nrow counts and checksums of the seed-made database, before and after the release that adopted it\n"
          + render(before, after))

    assert after == before  # every row, byte for byte, apart from the admin key the release issued
    assert all(count >= 2000 for count, _ in before.values())
    counts = dict(query(su_url, "SELECT 'api_keys', count(*) FROM api_keys"))
    assert counts["api_keys"] == before["api_keys"][0] + 1

    # Adopted at 0001 (never migrated from base), then migrated to head as usual; told as progress.
    assert result.revision == HEAD and result.applied == (HEAD,)
    adopted = [line for line in said if line.startswith("adopted at 0001_seed_schema")]
    assert adopted == [
        f"adopted at 0001_seed_schema: tables and functions owned by {OWNER_ROLE}; dropped public.idx_api_keys_key_hash"
        "; created or replaced public.get_shard_for_user(user_id uuid), public.set_updated_at(), "
        "public.api_keys.api_keys_set_updated_at, "
        "public.assets.assets_set_updated_at, public.users.users_set_updated_at"
    ], said
    assert said.index(adopted[0]) < said.index(f"upgrading from 0001_seed_schema: {HEAD}")

    # The schema is a fresh database's, exactly; everything belongs to the owner role; no scratch schema is left.
    assert no_drift(fresh(pg), url).splitlines()[2].startswith("no drift: ")
    assert query(su_url, OWNERS) == [(OWNER_ROLE,)]
    assert query(su_url, "SELECT to_regnamespace('gaia_adopt_probe')") == [(None,)]

    # The admin is the seed's user (not a second one) with exactly one active admin key: the one issued.
    assert query(su_url, "SELECT id FROM users WHERE email = %s", (ADMIN_EMAIL,)) == [(admin_id,)]
    assert query(su_url, ADMIN_KEYS) == [(seed.key_hash(result.admin_api_key), True)]

    # The fixes 0001 makes over the seed hold here too: shard numbers never negative, updated_at maintained.
    assert query(su_url, "SELECT get_shard_for_user('ffffffff-ffff-4fff-bfff-ffffffffffff')") == [(3,)]
    run(url, "UPDATE users SET name = 'Renamed' WHERE email = 'user1@example.com'")
    assert query(su_url, "SELECT localtimestamp - updated_at < interval '1 minute' FROM users "
                         "WHERE email = 'user1@example.com'") == [(True,)]

    # DESIGN.md's role matrix, cell by cell, through the service URLs the release returned.
    with psycopg.connect(url, autocommit=True) as conn:
        insert_sample_rows(conn)
    for service in SERVICES:
        with psycopg.connect(result.service_urls[service], autocommit=True) as conn:
            assert rights(conn) == ALLOWED[service], service

    # Released again: nothing to adopt, nothing to migrate.
    said.clear()
    again = release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, progress=said.append)
    assert again.applied == () and again.admin_api_key is None
    assert not any("adopt" in line for line in said)


def test_a_superuser_made_database_on_fly_is_adopted_too(pg: PgServer) -> None:
    # Fly's layout: the seed's script ran as the superuser `postgres`, who also runs the release.
    dbname = f"fly_{uuid.uuid4().hex[:12]}"
    pg.execute(f"CREATE DATABASE {dbname}")
    url = pg.url(dbname=dbname)
    run_seed_script(url, "dev", ADMIN_EMAIL)
    # ... and someone added the document's "Sharding Strategy" function, with its ::int bug.
    seed_sql = (Path(__file__).parent / "seed_schema.sql").read_text()
    run(url, seed_sql[seed_sql.index("CREATE OR REPLACE FUNCTION get_shard_for_user"):])
    assert query(url, "SELECT get_shard_for_user('ffffffff-ffff-4fff-bfff-ffffffffffff')") == [(-1,)]
    fill(url, 200)
    before = fingerprints(url)
    result = release(url, environment="dev", admin_email=ADMIN_EMAIL)
    assert result.revision == HEAD and result.admin_api_key is not None
    assert fingerprints(url, leave_out_keys=(seed.key_hash(result.admin_api_key),)) == before
    assert query(url, OWNERS) == [(OWNER_ROLE,)]
    assert query(url, "SELECT get_shard_for_user('ffffffff-ffff-4fff-bfff-ffffffffffff')") == [(3,)]
    no_drift(fresh(pg), url)


def test_a_predictable_admin_key_is_deactivated_and_a_random_one_issued(pg: PgServer) -> None:
    url, su_url, _ = seed_made(pg, users=0)
    # What someone who fixed the seed's insert by hand stored: the hex of sha256('admin-key-<env>'), for dev and
    # (the seed's name for prod) production, under any name.
    run(su_url, "INSERT INTO api_keys (user_id, key_hash, name, permissions) "
                  "SELECT id, encode(sha256('admin-key-dev'), 'hex'), 'Admin Key', '{\"admin\": true}' FROM users")
    run(su_url, "INSERT INTO api_keys (user_id, key_hash, name) "
                  "SELECT id, encode(sha256('admin-key-production'), 'hex'), 'ops' FROM users")
    said: list[str] = []
    result = release(url, environment="dev", admin_email=ADMIN_EMAIL, progress=said.append)
    assert result.admin_api_key is not None and result.admin_api_key.startswith(seed.KEY_PREFIX)
    assert query(su_url, "SELECT key_hash, is_active FROM api_keys ORDER BY created_at, name") == [
        (seed.key_hash("admin-key-dev"), False),
        (seed.key_hash("admin-key-production"), False),
        (seed.key_hash(result.admin_api_key), True),
    ]
    assert ("deactivated 2 predictable admin API keys (sha256 of 'admin-key-<environment>'); a random one is issued"
            in said)


def state(pg: PgServer, su_url: str, admin: str) -> dict[str, Any]:
    """Everything a refused adoption must leave as it was: schema, rows, owners, privileges, the admin's roles."""
    dbname = su_url.rsplit("/", 1)[1]
    snap = snapshot(su_url)
    return {
        "schema": (snap.revision, snap.objects),
        "rows": fingerprints(su_url),
        "owners_and_acls": query(
            su_url, "SELECT relname, pg_get_userbyid(relowner), relacl::text FROM pg_class "
                    "WHERE relnamespace = 'public'::regnamespace ORDER BY 1"),
        "schemas": query(su_url, "SELECT nspname, nspacl::text FROM pg_namespace ORDER BY 1"),
        "database_acl": query(pg.url(), "SELECT datacl::text FROM pg_database WHERE datname = %s", (dbname,)),
        "admin_memberships": query(
            pg.url(), "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = %s::regrole", (admin,)),
    }


PLANTED = {
    "extra column": ("ALTER TABLE users ADD COLUMN nickname text", "column public.users.nickname is extra"),
    "missing index": ("DROP INDEX idx_assets_status", "index public.idx_assets_status is missing"),
    "changed type": (
        "ALTER TABLE chat_messages ALTER COLUMN role TYPE varchar(80)",
        "column public.chat_messages.role has type character varying(80) in this database, "
        "character varying(50) in revision 0001_seed_schema",
    ),
    # A trigger of 0001's name and function but another event: only a missing trigger may be made, never a changed one.
    "changed trigger": (
        "CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "        BEGIN\n            NEW.updated_at := CURRENT_TIMESTAMP;\n            RETURN NEW;\n        END;\n"
        "        $$; CREATE TRIGGER users_set_updated_at BEFORE INSERT OR UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION set_updated_at()",
        "trigger public.users.users_set_updated_at differs",
    ),
}


@pytest.mark.parametrize("planted", sorted(PLANTED))
def test_a_planted_difference_is_refused_and_nothing_changes(pg: PgServer, planted: str) -> None:
    url, su_url, _ = seed_made(pg, users=500)
    statement, named = PLANTED[planted]
    run(url, statement)
    admin = url.split("://", 1)[1].split(":", 1)[0]
    before = state(pg, su_url, admin)

    done = run_dbops(*release_args(), env=release_env(url, PASSWORDS))
    assert done.returncode == 1 and done.stdout == ""
    assert error_line(done.stderr) == (
        "error: this database has the seed's tables but no recorded revision, and its schema differs from revision "
        f"0001_seed_schema in more than the seed's known ways ({named}), so it was not adopted and nothing was "
        "changed; compare it with a fresh database with `python -m dbops diff-schema`, make it match, and release "
        'again (docs/RUNBOOK.md, "Moving an existing environment onto gaia-db")'
    )
    assert "adopting a database made by the seed's script" in done.stderr
    assert state(pg, su_url, admin) == before


def test_several_differences_are_all_named(pg: PgServer) -> None:
    url, _, _ = seed_made(pg, users=0)
    for statement, _ in PLANTED.values():
        run(url, statement)
    run(url, "CREATE TABLE feedback (id int)")
    with pytest.raises(DbopsError) as refused:
        release(url, environment="dev", admin_email=ADMIN_EMAIL)
    message = str(refused.value)
    for _, named in PLANTED.values():
        assert named in message
    assert "relation public.feedback is extra" in message and "column public.feedback.id is extra" in message


def test_concurrent_releases_adopt_once(pg: PgServer) -> None:
    url, su_url, _ = seed_made(pg, users=300)
    before = fingerprints(su_url)
    env = release_env(url, PASSWORDS, "gaia_concurrent-admin-key-0123456789")
    with Background(*release_args(), env=env) as one, Background(*release_args(), env=env) as two:
        done = [one.finish(), two.finish()]
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert sum("adopted at 0001_seed_schema" in d.stderr for d in done) == 1
    assert fingerprints(su_url, leave_out_keys=(seed.key_hash("gaia_concurrent-admin-key-0123456789"),)) == before
    assert query(su_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_a_failing_first_revision_says_no_revision_is_recorded_not_empty(admin_url: str) -> None:
    # Not seed-made (none of its tables), but 0001 cannot run: the message must not call the database empty.
    run(admin_url, "CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    with pytest.raises(DbopsError) as failed:
        release(admin_url, environment="dev", admin_email=ADMIN_EMAIL)
    assert str(failed.value) == (
        "migration 0001_seed_schema (seed schema: users, api_keys, chat_messages, assets) failed: function "
        '"set_updated_at" already exists with same argument types; the database records no revision (nothing of it '
        "was applied)"
    )


def test_rehearsal_dump_restore_on_another_server_release_compare(pg: PgServer, tmp_path: Path) -> None:
    """docs/RUNBOOK.md's rehearsal: back up the seed-made database, restore it on a local server, release, compare."""
    url, su_url, _ = seed_made(pg, users=500)
    before = fingerprints(su_url)
    dump = tmp_path / "gaia-dev.dump"
    assert run_dbops("backup", "--output", str(dump), env={"DATABASE_URL": url}).returncode == 0
    local = PgServer().start()
    try:
        _, local_admin = local.create_database()
        restored = run_dbops("restore", str(dump), "--database", "rehearsal", "--no-owner", "--no-acl",
                             env={"DATABASE_URL": local_admin})
        assert restored.returncode == 0, restored.stderr
        rehearsal = local_admin.rsplit("/", 1)[0] + "/rehearsal"
        released = run_dbops(*release_args(), env=release_env(rehearsal, PASSWORDS))
        assert released.returncode == 0, released.stderr
        assert "adopted at 0001_seed_schema" in released.stderr
        no_drift(fresh(local), rehearsal)
        issued = query(rehearsal, "SELECT key_hash FROM api_keys WHERE is_active AND name = 'Admin Key'")
        assert fingerprints(local.url(dbname="rehearsal"), leave_out_keys=(issued[0][0],)) == before
    finally:
        local.stop()
