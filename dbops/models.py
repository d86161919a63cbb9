"""The schema as SQLAlchemy metadata, for `alembic check` (models and migrations must agree).

Mirrors the seed's tables column for column (see migrations/versions/0001_seed_schema.py); names of constraints
and indexes are PostgreSQL's defaults for the seed's DDL, so the two schemas compare equal in the catalog.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = sa.MetaData()

NOW = sa.text("CURRENT_TIMESTAMP")
EMPTY_JSON = sa.text("'{}'::jsonb")


def _id() -> sa.Column[object]:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()"))


def _timestamp(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.TIMESTAMP(), server_default=NOW)


users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255)),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    sa.PrimaryKeyConstraint("id", name="users_pkey"),
    sa.UniqueConstraint("email", name="users_email_key"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("permissions", JSONB(), server_default=EMPTY_JSON),
    sa.Column("is_active", sa.Boolean(), server_default=sa.text("true")),
    sa.Column("expires_at", sa.TIMESTAMP()),
    sa.Column("last_used_at", sa.TIMESTAMP()),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    sa.PrimaryKeyConstraint("id", name="api_keys_pkey"),
    sa.UniqueConstraint("key_hash", name="api_keys_key_hash_key"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="api_keys_user_id_fkey", ondelete="CASCADE"),
    sa.Index("idx_api_keys_user_id", "user_id"),
    # The seed's idx_api_keys_key_hash is left out: the UNIQUE constraint's index already covers key_hash.
    sa.Index("idx_api_keys_is_active", "is_active"),
)

chat_messages = sa.Table(
    "chat_messages",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("conversation_id", UUID(as_uuid=True), nullable=False),
    sa.Column("role", sa.String(50), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("model", sa.String(100)),
    sa.Column("provider", sa.String(50)),
    sa.Column("tokens_used", sa.Integer()),
    _timestamp("created_at"),
    sa.PrimaryKeyConstraint("id", name="chat_messages_pkey"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="chat_messages_user_id_fkey"),
    sa.Index("idx_chat_messages_user_id", "user_id"),
    sa.Index("idx_chat_messages_conversation_id", "conversation_id"),
    # Conversation history in order (revision 0002, built CONCURRENTLY).
    sa.Index("idx_chat_messages_conversation_created", "conversation_id", "created_at"),
)

assets = sa.Table(
    "assets",
    metadata,
    _id(),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("type", sa.String(50), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text()),
    sa.Column("url", sa.Text()),
    sa.Column("metadata", JSONB(), server_default=EMPTY_JSON),
    sa.Column("generation_params", JSONB(), server_default=EMPTY_JSON),
    sa.Column("status", sa.String(50), server_default=sa.text("'pending'::character varying")),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    sa.PrimaryKeyConstraint("id", name="assets_pkey"),
    sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="assets_user_id_fkey"),
    sa.Index("idx_assets_user_id", "user_id"),
    sa.Index("idx_assets_type", "type"),
    sa.Index("idx_assets_status", "status"),
)
