"""Figure 5: each schema-change pattern, dbops.online's helper vs the naive statement, under the same writer.

The same writer as figure 3 (200 inserts/s as gaia_chat, 1000 ms statement timeout, latency from when a write was
due) runs while each variant changes the 1M-row `chat_messages`; both variants of a pattern run in turn on the same
table (put back between them, not measured), `rounds` times, samples pooled. The naive statement runs as a plain
Alembic revision would: one transaction, the release's session lock_timeout (10 s). The helper runs as a revision's
`with online.steps() as db:` does: the owner role, autocommit, dbops.online's lock discipline.

- add index: `CREATE INDEX` vs `db.create_index` (CONCURRENTLY)
- add FK: `ADD CONSTRAINT ... FOREIGN KEY` (validates under SHARE ROW EXCLUSIVE) vs `db.add_foreign_key`
- add NOT NULL: `SET NOT NULL` (scans under ACCESS EXCLUSIVE) vs `db.add_not_null`
- add CHECK: `ADD CONSTRAINT ... CHECK` (scans under ACCESS EXCLUSIVE) vs `db.add_check`
- backfill a new column: one `UPDATE` of every row in the revision's transaction vs `db.backfill` (batches of
  BACKFILL_BATCH, BACKFILL_PAUSE apart); the column was added (nullable) before, and the writer already fills it, as
  the application's expand step would
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.online import INSERT, Run, Variant, setup, with_writer

FILLED_INSERT = ("INSERT INTO chat_messages (user_id, conversation_id, role, content, model, provider, tokens_used,"
                 " content_chars) VALUES (%s, %s, 'user', 'how do I rotate a key?', 'gpt', 'openai', 12, 22)")
FK = "chat_messages_user_id_fkey"
CHECK = "chat_messages_tokens_nonnegative"
INDEX = "idx_chat_messages_model_created"
BACKFILL_BATCH = 2000
BACKFILL_PAUSE = 0.02


@dataclass(frozen=True)
class Pattern:
    name: str
    reset: tuple[str, ...]  # back to before the change (not measured)
    naive: tuple[str, ...]  # one transaction
    helper: Callable[[Any], object]  # given an online.Online
    insert: str = INSERT


PATTERNS = (
    Pattern("add index", (f"DROP INDEX IF EXISTS {INDEX}",),
            (f"CREATE INDEX {INDEX} ON chat_messages (model, created_at)",),
            lambda db: db.create_index(INDEX, "chat_messages", ["model", "created_at"])),
    Pattern("add FK", (f"ALTER TABLE chat_messages DROP CONSTRAINT IF EXISTS {FK}",),
            (f"ALTER TABLE chat_messages ADD CONSTRAINT {FK} FOREIGN KEY (user_id) REFERENCES users (id)",),
            lambda db: db.add_foreign_key(FK, "chat_messages", ["user_id"], "users")),
    Pattern("add NOT NULL", ("ALTER TABLE chat_messages ALTER COLUMN model DROP NOT NULL",),
            ("ALTER TABLE chat_messages ALTER COLUMN model SET NOT NULL",),
            lambda db: db.add_not_null("chat_messages", "model")),
    Pattern("add CHECK", (f"ALTER TABLE chat_messages DROP CONSTRAINT IF EXISTS {CHECK}",),
            (f"ALTER TABLE chat_messages ADD CONSTRAINT {CHECK} CHECK (tokens_used >= 0)",),
            lambda db: db.add_check(CHECK, "chat_messages", "tokens_used >= 0")),
    Pattern("backfill a new column",
            ("ALTER TABLE chat_messages DROP COLUMN IF EXISTS content_chars",
             "ALTER TABLE chat_messages ADD COLUMN content_chars bigint"),
            ("UPDATE chat_messages SET content_chars = length(content) WHERE content_chars IS NULL",),
            lambda db: db.backfill("chat_messages", "content_chars = length(content)",
                                   pending="content_chars IS NULL", batch_size=BACKFILL_BATCH, pause=BACKFILL_PAUSE),
            insert=FILLED_INSERT),
)


@dataclass(frozen=True)
class PatternFigures:
    name: str
    helper: Variant
    naive: Variant


def measure(server: Any, rows: int, rate: float, before_seconds: float, rounds: int) -> list[PatternFigures]:
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from dbops import migrate, online
    from dbops.names import OWNER_ROLE

    admin_url, chat_url, user_id = setup(server, rows)

    def run_sql(*statements: str, vacuum: bool = False) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
            if vacuum:
                conn.execute("VACUUM ANALYZE chat_messages")
        server.execute("CHECKPOINT")

    engine = create_engine("postgresql+psycopg://", poolclass=NullPool,
                           creator=lambda: psycopg.connect(admin_url, autocommit=True))
    figures = []
    try:
        for pattern in PATTERNS:
            naive_run, helper_run = Run([], [], []), Run([], [], [])

            def naive(pattern: Pattern = pattern) -> None:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    for setting in migrate.SESSION_SETTINGS:
                        conn.execute(setting)
                    with conn.transaction():
                        for statement in pattern.naive:
                            conn.execute(statement)

            def helper(pattern: Pattern = pattern) -> None:
                with engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql(f"SET ROLE {OWNER_ROLE}")
                    pattern.helper(online.Online(conn, lag=lambda _c: []))

            backfill = pattern.insert != INSERT
            for _ in range(rounds):
                for action, run in ((naive, naive_run), (helper, helper_run)):
                    run_sql(*pattern.reset, vacuum=backfill)
                    with_writer(chat_url, user_id, rate, before_seconds, action, run, insert=pattern.insert)
            run_sql(*pattern.reset, vacuum=backfill)
            if backfill:
                run_sql("ALTER TABLE chat_messages DROP COLUMN IF EXISTS content_chars", vacuum=True)
            figures.append(PatternFigures(pattern.name, Variant.of(helper_run), Variant.of(naive_run)))
    finally:
        engine.dispose()
    return figures
