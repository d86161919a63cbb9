"""index chat_messages (conversation_id, created_at) for conversation history

Built CONCURRENTLY so chat keeps writing during the build, which is why this revision holds nothing else: it runs in
an autocommit block outside the per-revision transaction. A build that failed half-way (timeout, crash) leaves an
INVALID index behind; that leftover is dropped (also concurrently) before building again. A valid index of that name
is kept: the build finished but the version stamp did not.

Revision ID: 0002_chat_history_index
Revises: 0001_seed_schema
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from dbops.migrate import LOCK_TIMEOUT, STATEMENT_TIMEOUT

revision = "0002_chat_history_index"
down_revision = "0001_seed_schema"
branch_labels = None
depends_on = None

INDEX = "idx_chat_messages_conversation_created"
# A concurrent build waits for every open transaction and scans the table twice; it blocks no reads or writes,
# so it may take far longer than the session limits allow other statements.
BUILD_TIMEOUT = "4h"


def _leftover_is_invalid() -> bool:
    if context.is_offline_mode():
        return True  # offline SQL cannot look; DROP ... IF EXISTS is harmless on a database at 0001
    row = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND c.relnamespace = 'public'::regnamespace"
            ),
            {"name": INDEX},
        )
        .scalar()
    )
    return bool(row)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"SET statement_timeout = '{BUILD_TIMEOUT}'")
        op.execute(f"SET lock_timeout = '{BUILD_TIMEOUT}'")
        # One core for the build: parallel maintenance workers would take every core from the application's queries.
        op.execute("SET max_parallel_maintenance_workers = 0")
        if _leftover_is_invalid():
            op.drop_index(INDEX, table_name="chat_messages", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            INDEX,
            "chat_messages",
            ["conversation_id", "created_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        op.execute("RESET max_parallel_maintenance_workers")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="chat_messages", postgresql_concurrently=True, if_exists=True)
