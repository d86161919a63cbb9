"""index chat_messages (conversation_id, created_at) for conversation history

Built CONCURRENTLY so chat keeps writing during the build, which is why this revision holds nothing else: it runs in
an autocommit block outside the per-revision transaction. A build that failed half-way (timeout, crash) leaves an
INVALID index behind; that leftover is dropped (also concurrently) before building again. A valid index of that name
is kept: the build finished but the version stamp did not. The lock discipline is dbops.online's.

Revision ID: 0002_chat_history_index
Revises: 0001_seed_schema
"""

from __future__ import annotations

from alembic import context, op

from dbops import online
from dbops.migrate import SESSION_SETTINGS

revision = "0002_chat_history_index"
down_revision = "0001_seed_schema"
branch_labels = None
depends_on = None

INDEX = "idx_chat_messages_conversation_created"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        if context.is_offline_mode():  # SQL for review and linting: the same statements, without the retries
            op.execute(f"SET lock_timeout = '{online.BUILD_LOCK_TIMEOUT}'")
            op.execute(f"SET statement_timeout = '{online.BUILD_TIMEOUT}'")
            op.execute("SET max_parallel_maintenance_workers = 0")
            op.drop_index(INDEX, table_name="chat_messages", postgresql_concurrently=True, if_exists=True)
            op.create_index(INDEX, "chat_messages", ["conversation_id", "created_at"], postgresql_concurrently=True,
                            if_not_exists=True)
            for statement in SESSION_SETTINGS:
                op.execute(statement)
            op.execute("RESET max_parallel_maintenance_workers")
            return
        # Short, retried lock waits that name what they wait for; a long timeout for the build only; a build that a
        # killed release left running is waited for or cancelled, never collided with (dbops/online.py).
        online.create_index_concurrently(
            op.get_bind(),
            INDEX,
            "chat_messages",
            ["conversation_id", "created_at"],
            progress=context.config.attributes.get("progress"),
            restore_settings=SESSION_SETTINGS,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="chat_messages", postgresql_concurrently=True, if_exists=True)
