"""Databases made the way Gaia's are today: the seed's own `scripts/init-database-portable.sh`, run through `psql`.

seed_init/ holds the seed document's text verbatim: the script (its heredoc `cat`s schemas/core_tables.sql and
schemas/service_tables.sql, the document's "Core Tables" and "Service-Specific Tables"). Its `aws` branch runs
`psql $DATABASE_URL`, which lets a test point it at any database; psql goes on after errors, as it did for the seed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

SEED_INIT = Path(__file__).parent / "seed_init"
TABLES = ("users", "api_keys", "chat_messages", "assets")
# The seed's key insert: SHA256(...) is bytea, 66 characters as text, in a varchar(64).
SEED_KEY_ERROR = "value too long for type character varying(64)"

Fingerprints = dict[str, tuple[int, str]]


def run_seed_script(url: str, environment: str, admin_email: str) -> subprocess.CompletedProcess[str]:
    """`scripts/init-database-portable.sh ENV EMAIL aws` with DATABASE_URL=url, from the seed's directory."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(DATABASE_URL=url, PSQLRC="/dev/null")  # no ~/.psqlrc of this machine
    return subprocess.run(
        ["bash", "scripts/init-database-portable.sh", environment, admin_email, "aws"],
        cwd=SEED_INIT, env=env, capture_output=True, text=True, check=True, timeout=60,
    )


def fill(url: str, users: int = 2000) -> None:
    """Rows in every table, as the services write them (as the login user), ids and times deterministic:
    `users` users, 1.5 x as many api_keys and assets, 3 x as many chat_messages; NULLs, JSON, non-ASCII included."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO users (id, email, name, created_at, updated_at) "
            "SELECT md5('user-' || i)::uuid, 'user' || i || '@example.com', "
            "       CASE WHEN i %% 7 = 0 THEN NULL ELSE 'Zoë ' || i END, "
            "       timestamp '2024-01-01' + i * interval '1 minute', timestamp '2024-06-01' + i * interval '1 second' "
            "FROM generate_series(1, %(n)s) i",
            {"n": users},
        )
        conn.execute(
            "INSERT INTO api_keys (id, user_id, key_hash, name, permissions, is_active, expires_at, last_used_at, "
            "                      created_at, updated_at) "
            "SELECT md5('key-' || i)::uuid, md5('user-' || (i %% %(n)s + 1))::uuid, "
            "       encode(sha256(convert_to('key-' || i, 'UTF8')), 'hex'), 'key ' || i, "
            "       jsonb_build_object('scopes', jsonb_build_array('chat', 'assets'), 'n', i), i %% 5 <> 0, "
            "       CASE WHEN i %% 3 = 0 THEN timestamp '2030-01-01' END, "
            "       CASE WHEN i %% 2 = 0 THEN timestamp '2025-01-01' + i * interval '1 hour' END, "
            "       timestamp '2024-02-01' + i * interval '1 minute', timestamp '2024-07-01' + i * interval '1 second' "
            "FROM generate_series(1, %(n)s * 3 / 2) i",
            {"n": users},
        )
        conn.execute(
            "INSERT INTO chat_messages (id, user_id, conversation_id, role, content, model, provider, tokens_used, "
            "                           created_at) "
            "SELECT md5('msg-' || i)::uuid, md5('user-' || (i %% %(n)s + 1))::uuid, md5('conv-' || (i / 10))::uuid, "
            "       CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END, repeat('héllo ' || i || ' ', 1 + i %% 20), "
            "       CASE WHEN i %% 4 = 0 THEN NULL ELSE 'gpt-4o' END, 'openai', NULLIF(i %% 500, 0), "
            "       timestamp '2025-01-01' + i * interval '1 second' "
            "FROM generate_series(1, %(n)s * 3) i",
            {"n": users},
        )
        conn.execute(
            "INSERT INTO assets (id, user_id, type, name, description, url, metadata, generation_params, status, "
            "                    created_at, updated_at) "
            "SELECT md5('asset-' || i)::uuid, md5('user-' || (i %% %(n)s + 1))::uuid, "
            "       (ARRAY['image', 'audio', 'video'])[1 + i %% 3], 'asset-' || i || '.png', "
            "       CASE WHEN i %% 2 = 0 THEN 'ß ' || i END, 'https://cdn.example.com/' || i, "
            "       jsonb_build_object('w', i, 'ü', 'ß'), jsonb_build_object('seed', i), "
            "       (ARRAY['pending', 'ready', 'failed'])[1 + i %% 3], "
            "       timestamp '2024-03-01' + i * interval '1 minute', timestamp '2024-08-01' + i * interval '1 second' "
            "FROM generate_series(1, %(n)s * 3 / 2) i",
            {"n": users},
        )


def fingerprints(url: str, *, leave_out_keys: tuple[str, ...] = ()) -> Fingerprints:
    """Every table's row count and checksum (md5 of its rows' text in id order), all taken in one REPEATABLE READ
    snapshot so concurrent writes cannot blur them. `leave_out_keys`: api_keys rows with these hashes (keys the
    release itself issued) are not counted."""
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        result: Fingerprints = {}
        with conn.transaction():
            for table in TABLES:
                where = sql.SQL("WHERE NOT (t.key_hash = ANY(%s))" if table == "api_keys" else "")
                row = conn.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) "
                        "FROM public.{} t {}"
                    ).format(sql.Identifier(table), where),
                    (list(leave_out_keys),) if table == "api_keys" else None,
                ).fetchone()
                assert row is not None
                result[table] = (int(row[0]), str(row[1]))
    return result


def render(before: Fingerprints, after: Fingerprints) -> str:
    """The figures as a small table for the test output (`pytest -s`) and the issue's note."""
    lines = [f"{'table':<14} {'rows before':>11} {'rows after':>10}  {'md5 before':<32}  {'md5 after':<32}"]
    for table in TABLES:
        (n0, h0), (n1, h1) = before[table], after[table]
        lines.append(f"{table:<14} {n0:>11} {n1:>10}  {h0}  {h1}")
    return "\n".join(lines)
