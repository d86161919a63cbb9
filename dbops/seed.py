"""The admin seed: one admin user and exactly one active admin API key, idempotent.

Only the key's SHA-256 hex reaches the database. It is computed here and equals
`encode(sha256(convert_to(key, 'UTF8')), 'hex')` in SQL, so the plaintext never appears in a statement or a log.
"""

from __future__ import annotations

import hashlib
import secrets

import psycopg
from psycopg.types.json import Jsonb

from dbops.names import ADMIN_KEY_PREFIX

ADMIN_NAME = "Admin"
ADMIN_KEY_NAME = "Admin Key"
ADMIN_PERMISSIONS = {"admin": True}
KEY_PREFIX = ADMIN_KEY_PREFIX  # makes a leaked key recognisable to secret scanners

Conn = psycopg.Connection[tuple[object, ...]]


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def seed_admin(conn: Conn, *, email: str, api_key: str | None) -> str | None:
    """Ensure the admin user and its one active admin key; returns the key only if this call generated it.

    With `api_key`, that key becomes the one active admin key (a new one deactivates the others). Without it, an
    existing active admin key is kept, and one is generated only when there is none.
    """
    # A case variant of an existing admin's address is the same admin, not a second one.
    row = conn.execute(
        "SELECT id FROM users WHERE lower(email) = lower(%s) ORDER BY email = %s DESC, created_at LIMIT 1",
        (email, email),
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO users (email, name) VALUES (%s, %s) ON CONFLICT (email) DO NOTHING", (email, ADMIN_NAME)
        )
        row = conn.execute("SELECT id FROM users WHERE email = %s", (email,)).fetchone()
    assert row is not None  # inserted or already there, in this transaction
    user_id = row[0]
    admin_key = "name = %s AND permissions @> %s"
    generated = None
    if api_key is None:
        active = conn.execute(
            f"SELECT 1 FROM api_keys WHERE user_id = %s AND is_active AND {admin_key}",  # noqa: S608 - constant
            (user_id, ADMIN_KEY_NAME, Jsonb(ADMIN_PERMISSIONS)),
        ).fetchone()
        if active is not None:
            return None
        api_key = generated = generate_key()
    digest = key_hash(api_key)
    # Re-handing a key that is already the active admin key changes nothing (no updated_at churn).
    conn.execute(
        """
        INSERT INTO api_keys (user_id, key_hash, name, permissions, is_active)
        VALUES (%(user)s, %(hash)s, %(name)s, %(perms)s, true)
        ON CONFLICT (key_hash) DO UPDATE
            SET user_id = EXCLUDED.user_id, name = EXCLUDED.name, permissions = EXCLUDED.permissions,
                is_active = true
            WHERE (api_keys.user_id, api_keys.name, api_keys.permissions, api_keys.is_active)
                IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.name, EXCLUDED.permissions, true)
        """,
        {"user": user_id, "hash": digest, "name": ADMIN_KEY_NAME, "perms": Jsonb(ADMIN_PERMISSIONS)},
    )
    # Only the admin user's own admin keys: another user's key that happens to share the name stays active.
    conn.execute(
        f"UPDATE api_keys SET is_active = false WHERE is_active AND user_id = %s AND key_hash <> %s "  # noqa: S608
        f"AND {admin_key}",
        (user_id, digest, ADMIN_KEY_NAME, Jsonb(ADMIN_PERMISSIONS)),
    )
    return generated
