"""seed schema: users, api_keys, chat_messages, assets

The tables of seed/portable-database-architecture.md, column for column, plus:
- updated_at kept current by a trigger (the seed only defaulted it);
- get_shard_for_user(uuid) through ::bigint, so it is never negative (the seed's ::int is, for 37.5 % of UUIDs).
Left out: idx_api_keys_key_hash, which duplicates the index of api_keys' UNIQUE (key_hash) constraint.

Revision ID: 0001_seed_schema
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001_seed_schema"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.text("CURRENT_TIMESTAMP")
EMPTY_JSON = sa.text("'{}'::jsonb")
TABLES_WITH_UPDATED_AT = ("users", "api_keys", "assets")


def _id() -> sa.Column[object]:
    return sa.Column("id", UUID(), nullable=False, server_default=sa.text("gen_random_uuid()"))


def upgrade() -> None:
    if context.is_offline_mode():
        # squawk (tests/db/test_lint.py) would steer these new tables to TEXT, timestamptz and bigint. The seed's
        # types are kept on purpose: the services already map them, and this revision must equal the seed's schema.
        # Scoped to this revision's SQL only; later revisions are linted in full.
        op.get_context().impl.static_output(
            "-- squawk-ignore-file prefer-text-field, prefer-timestamp-tz, prefer-bigint-over-int"
        )
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("created_at", sa.TIMESTAMP(), server_default=NOW),
        sa.Column("updated_at", sa.TIMESTAMP(), server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="users_pkey"),
        sa.UniqueConstraint("email", name="users_email_key"),
    )
    op.create_table(
        "api_keys",
        _id(),
        sa.Column("user_id", UUID(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),  # SHA-256 hex of the key
        sa.Column("name", sa.String(255)),
        sa.Column("permissions", JSONB(), server_default=EMPTY_JSON),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true")),
        sa.Column("expires_at", sa.TIMESTAMP()),
        sa.Column("last_used_at", sa.TIMESTAMP()),
        sa.Column("created_at", sa.TIMESTAMP(), server_default=NOW),
        sa.Column("updated_at", sa.TIMESTAMP(), server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="api_keys_pkey"),
        sa.UniqueConstraint("key_hash", name="api_keys_key_hash_key"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="api_keys_user_id_fkey", ondelete="CASCADE"),
    )
    op.create_index("idx_api_keys_user_id", "api_keys", ["user_id"])
    op.create_index("idx_api_keys_is_active", "api_keys", ["is_active"])

    op.create_table(
        "chat_messages",
        _id(),
        sa.Column("user_id", UUID(), nullable=False),
        sa.Column("conversation_id", UUID(), nullable=False),
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model", sa.String(100)),
        sa.Column("provider", sa.String(50)),
        sa.Column("tokens_used", sa.Integer()),
        sa.Column("created_at", sa.TIMESTAMP(), server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="chat_messages_pkey"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="chat_messages_user_id_fkey"),
    )
    op.create_index("idx_chat_messages_user_id", "chat_messages", ["user_id"])
    op.create_index("idx_chat_messages_conversation_id", "chat_messages", ["conversation_id"])

    op.create_table(
        "assets",
        _id(),
        sa.Column("user_id", UUID(), nullable=False),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("url", sa.Text()),
        sa.Column("metadata", JSONB(), server_default=EMPTY_JSON),
        sa.Column("generation_params", JSONB(), server_default=EMPTY_JSON),
        sa.Column("status", sa.String(50), server_default=sa.text("'pending'")),
        sa.Column("created_at", sa.TIMESTAMP(), server_default=NOW),
        sa.Column("updated_at", sa.TIMESTAMP(), server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="assets_pkey"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="assets_user_id_fkey"),
    )
    op.create_index("idx_assets_user_id", "assets", ["user_id"])
    op.create_index("idx_assets_type", "assets", ["type"])
    op.create_index("idx_assets_status", "assets", ["status"])

    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := CURRENT_TIMESTAMP;
            RETURN NEW;
        END;
        $$
        """
    )
    for table in TABLES_WITH_UPDATED_AT:
        op.execute(
            f"CREATE TRIGGER {table}_set_updated_at BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION set_updated_at()"
        )

    # Shard = first 32 bits of the UUID mod 4; ::bigint keeps the 32 bits unsigned (the seed's ::int went negative).
    op.execute(
        """
        CREATE FUNCTION get_shard_for_user(user_id UUID) RETURNS INTEGER
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT (('x' || substr(user_id::text, 1, 8))::bit(32)::bigint % 4)::integer
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION get_shard_for_user(UUID)")
    for table in TABLES_WITH_UPDATED_AT:
        op.execute(f"DROP TRIGGER {table}_set_updated_at ON {table}")
    op.execute("DROP FUNCTION set_updated_at()")
    for table in ("assets", "chat_messages", "api_keys", "users"):
        op.drop_table(table)  # drops its indexes and constraints with it
