"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

# This revision runs inside `pulumi up` against the live database while the services write to it. Anything that
# touches an existing table goes through dbops.online (README: "Writing a revision"); tests/db/test_lint.py lints
# this revision's SQL with squawk and fails CI on a statement that locks or rewrites a table:
#
#     from dbops import online
#
#     with online.steps() as db:  # each step in a short transaction of its own, lock waits retried
#         db.add_column("chat_messages", "content_chars", "bigint")              # nullable or a constant default
#         db.backfill("chat_messages", "content_chars = length(content)",      # batches; resumes; waits for replicas
#                     pending="content_chars IS NULL", batch_size=1000, pause=0.05, max_replica_lag=10)
#         db.add_not_null("chat_messages", "content_chars")                   # validated CHECK, then SET NOT NULL
#         db.add_check("chat_messages_tokens_nonnegative", "chat_messages", "tokens_used >= 0")  # NOT VALID, VALIDATE
#         db.add_foreign_key("chat_messages_user_id_fkey", "chat_messages", ["user_id"], "users")
#         db.create_index("idx_chat_messages_model", "chat_messages", ["model"])  # CONCURRENTLY
#         db.execute("ALTER TABLE public.chat_messages ALTER COLUMN model SET DEFAULT 'gpt'", tables=["chat_messages"])
#         db.unsafe('ALTER TABLE public."chat_messages" DROP COLUMN "model"', tables=["chat_messages"],
#                   rule="ban-drop-column", reason="no deployed service reads model since v12")  # the escape hatch
#
# New tables may use op.create_table / op.create_index directly: nothing else is using them yet.


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
