"""DESIGN.md's role matrix, restated for the tests (not imported from dbops.roles, so tests check code against design).

Shared by the release-engine tests and the local end-to-end test: `rights(conn)` tries every statement of every
table in a rolled-back transaction and returns what the login may do.
"""

from __future__ import annotations

import uuid

import psycopg

Conn = psycopg.Connection[tuple[object, ...]]

# The matrix restated from DESIGN.md (not imported from dbops.roles, so the test checks the code against the design).
RW = {"select", "insert", "update", "delete"}
ALLOWED: dict[str, dict[str, set[str]]] = {
    "analytics": {"users": {"select"}, "api_keys": {"select"}, "chat_messages": {"select"}, "assets": {"select"}},
    "chat": {"users": {"select"}, "api_keys": set(), "chat_messages": RW, "assets": set()},
    "assets": {"users": {"select"}, "api_keys": set(), "chat_messages": set(), "assets": RW},
    "auth": {"users": RW, "api_keys": RW | {"select_key_hash"}, "chat_messages": set(), "assets": set()},
    # The read-only login of readerUrls (analytics, operations): what analytics reads, and never the admin's rights.
    "reader": {"users": {"select"}, "api_keys": {"select"}, "chat_messages": {"select"}, "assets": {"select"}},
}
USER = "11111111-1111-4111-8111-111111111111"
BARE_USER = "33333333-3333-4333-8333-333333333333"  # nothing refers to it, so deleting it is possible
ROW = "22222222-2222-4222-8222-222222222222"  # id of the sample row in api_keys, chat_messages, assets
API_KEY_COLUMNS = "id, user_id, name, permissions, is_active, expires_at, last_used_at, created_at, updated_at"
INSERTS = {
    "users": "INSERT INTO users (email) VALUES ('new-{n}@x.io')",
    "api_keys": f"INSERT INTO api_keys (user_id, key_hash) VALUES ('{USER}', 'hash-{{n}}')",
    "chat_messages": f"INSERT INTO chat_messages (user_id, conversation_id, role, content) "
    f"VALUES ('{USER}', gen_random_uuid(), 'user', 'hi')",
    "assets": f"INSERT INTO assets (user_id, type, name) VALUES ('{USER}', 'image', 'a')",
}
UPDATED = {"users": "name", "api_keys": "name", "chat_messages": "content", "assets": "name"}


def statements(table: str) -> dict[str, str]:
    key = BARE_USER if table == "users" else ROW
    return {
        "select": f"SELECT {API_KEY_COLUMNS if table == 'api_keys' else '*'} FROM {table}",
        "insert": INSERTS[table].replace("{n}", uuid.uuid4().hex),
        "update": f"UPDATE {table} SET {UPDATED[table]} = {UPDATED[table]} WHERE id = '{key}'",
        "delete": f"DELETE FROM {table} WHERE id = '{key}'",
        "truncate": f"TRUNCATE {table} CASCADE",
        "alter": f"ALTER TABLE {table} ADD COLUMN hacked integer",
        "drop": f"DROP TABLE {table} CASCADE",
        **({"select_key_hash": "SELECT key_hash FROM api_keys"} if table == "api_keys" else {}),
    }



def allowed(conn: Conn, statement: str) -> bool:
    """Run `statement` in a transaction that is always rolled back; True if permitted, False if denied."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)  # type: ignore[arg-type]
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def insert_sample_rows(conn: Conn) -> None:
    """One row per table (and a user nothing refers to), so UPDATE and DELETE have something to act on."""
    conn.execute(f"INSERT INTO users (id, email) VALUES ('{USER}', 'u@x.io'), ('{BARE_USER}', 'bare@x.io')")
    conn.execute(f"INSERT INTO api_keys (id, user_id, key_hash) VALUES ('{ROW}', '{USER}', 'h')")
    conn.execute(
        f"INSERT INTO chat_messages (id, user_id, conversation_id, role, content) "
        f"VALUES ('{ROW}', '{USER}', gen_random_uuid(), 'user', 'hi')"
    )
    conn.execute(f"INSERT INTO assets (id, user_id, type, name) VALUES ('{ROW}', '{USER}', 'image', 'a')")


def rights(conn: Conn) -> dict[str, set[str]]:
    """Every operation of `statements()` this login may perform, per table (in the shape of ALLOWED)."""
    return {
        table: {operation for operation, statement in statements(table).items() if allowed(conn, statement)}
        for table in INSERTS
    }
