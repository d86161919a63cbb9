"""dbops.online's steps on a real PostgreSQL: short, retried lock waits that name the blocker, constraints added
NOT VALID and validated in a transaction of their own, NOT NULL through a validated check, a batched backfill that
resumes, and a whole revision rolled back and retried when its locks cannot be had."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dbhelpers import ADMIN_EMAIL, HEAD, PASSWORDS, project_copy, query, revision_source
from pgserver import wait_until
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from dbops import migrate, online
from dbops.errors import DbopsError
from dbops.names import OWNER_ROLE
from dbops.release import ReleaseResult, release

FAST = online.LockRetry(timeouts_ms=(50,), first_pause=0.05, max_pause=0.2, give_up_after=60)
USER = "00000000-0000-4000-8000-000000000001"
CHECK = "chat_messages_tokens_nonnegative"


@contextmanager
def migration_session(url: str) -> Iterator[Connection]:
    """What a revision's steps get: the admin login, SET ROLE to the owner, autocommit."""
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url, autocommit=True),
                           poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql(f"SET ROLE {OWNER_ROLE}")
            yield conn
    finally:
        engine.dispose()


def _messages(url: str, count: int, **columns: str) -> None:
    extra = "".join(f", {name}" for name in columns)
    values = "".join(f", {value}" for value in columns.values())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (%s, 'u@x.io') ON CONFLICT DO NOTHING", (USER,))
        conn.execute(
            f"INSERT INTO chat_messages (user_id, conversation_id, role, content, tokens_used{extra}) "
            f"SELECT %s, gen_random_uuid(), 'user', repeat('x', g %% 50), g{values} FROM generate_series(1, %s) g",
            (USER, count),
        )


@contextmanager
def idle_transaction(url: str, sql: str = "SELECT count(*) FROM chat_messages") -> Iterator[int]:
    """An application's transaction left idle after touching chat_messages (ACCESS SHARE); yields its pid."""
    conn = psycopg.connect(url, application_name="chat-service")
    try:
        conn.execute(sql)  # type: ignore[arg-type]
        yield conn.info.backend_pid
    finally:
        conn.close()


def _insert_ms(url: str, timeout_ms: int = 1000) -> float | None:
    """One application insert's latency in ms, or None when it failed (timed out)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
        started = time.monotonic()
        try:
            conn.execute("INSERT INTO chat_messages (user_id, conversation_id, role, content) "
                         "VALUES (%s, gen_random_uuid(), 'user', 'hi')", (USER,))
        except psycopg.errors.QueryCanceled:
            return None
        return (time.monotonic() - started) * 1000


class InThread:
    """Run `work` in a thread; keep its result or exception."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.outcome: list[Any] = []

        def run() -> None:
            try:
                self.outcome.append(work())
            except BaseException as exc:
                self.outcome.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 60) -> Any:
        self.thread.join(timeout)
        assert self.outcome, "still running"
        if isinstance(self.outcome[0], BaseException):
            raise self.outcome[0]
        return self.outcome[0]


def _constraint(url: str, name: str) -> list[tuple[Any, ...]]:
    return query(url, "SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,))


def test_a_held_lock_makes_the_step_retry_naming_the_blocker_and_succeed_once_released(
    released: tuple[str, ReleaseResult],
) -> None:
    url, _ = released
    _messages(url, 100)
    lines: list[str] = []
    with migration_session(url) as conn:
        with idle_transaction(url) as pid:
            db = online.Online(conn, progress=lines.append, retry=FAST)
            step = InThread(lambda: db.add_check(CHECK, "chat_messages", "tokens_used >= 0"))
            expected = f"adding constraint {CHECK} NOT VALID could not lock chat_messages within 50ms (held by " \
                       f"pid {pid} (chat-service, idle in transaction, transaction open for "
            assert wait_until(lambda: any(line.startswith(expected) for line in lines), timeout=10), lines
            # While it retries, the application's writes go on: the step never queues in front of them for long.
            latencies = [_insert_ms(url) for _ in range(20)]
            assert None not in latencies and max(latencies) < 500, latencies  # type: ignore[type-var]
            assert step.thread.is_alive() and _constraint(url, CHECK) == []
            assert any("rolled back attempt 2, retrying in" in line for line in lines), lines
        step.result()  # the transaction ended: the next attempt gets the lock
    assert _constraint(url, CHECK) == [(True,)]
    assert any(line.startswith(f"validating constraint {CHECK} on chat_messages") for line in lines), lines


def test_the_default_lock_waits_start_at_20_ms_and_never_exceed_half_a_second() -> None:
    # The tests above use a faster policy; a release uses this one: every write to the table queues behind a DDL
    # statement while it waits for its lock, so the first waits are the shortest.
    policy = online.LockRetry()
    waits = [policy.timeout_ms(attempt) for attempt in range(1, 30)]
    assert waits[:5] == [20] * 5 and waits == sorted(waits) and max(waits) == 500


def test_the_naive_statement_would_block_the_applications_writes(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    _messages(url, 10)
    with idle_transaction(url):
        naive = psycopg.connect(url, autocommit=True)
        try:
            naive.execute("SET lock_timeout = '3s'")  # a generous timeout, as a plain revision might have
            waiting = InThread(lambda: naive.execute(
                f"ALTER TABLE chat_messages ADD CONSTRAINT {CHECK} CHECK (tokens_used >= 0)"))
            assert wait_until(lambda: query(url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                                 "'Lock' AND query LIKE 'ALTER TABLE chat_messages%'") == [(1,)])
            assert _insert_ms(url, timeout_ms=500) is None  # queued behind the waiting ALTER: the write fails
            with pytest.raises(psycopg.errors.LockNotAvailable):
                waiting.result()
        finally:
            naive.close()


def test_giving_up_is_one_sentence_naming_the_blocker(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    retry = online.LockRetry(timeouts_ms=(20,), first_pause=0.05, max_pause=0.1, give_up_after=0.6)
    with idle_transaction(url) as pid, migration_session(url) as conn:
        with pytest.raises(DbopsError) as caught:
            online.Online(conn, retry=retry).add_column("chat_messages", "content_chars", "integer")
    message = str(caught.value)
    assert message.startswith("adding column chat_messages.content_chars gave up after "), message
    assert f"while pid {pid} (chat-service, idle in transaction" in message and "\n" not in message
    assert message.endswith("end that transaction and run the release again")
    assert query(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'content_chars'") == [(0,)]


def test_a_foreign_key_is_added_not_valid_and_validated_in_its_own_transaction(
    released: tuple[str, ReleaseResult],
) -> None:
    url, _ = released
    name = "chat_messages_user_id_fkey"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE chat_messages DROP CONSTRAINT {name}")
    _messages(url, 50)
    orphan = "00000000-0000-4000-8000-0000000000ff"
    with psycopg.connect(url, autocommit=True) as conn:  # a row whose user does not exist
        conn.execute("INSERT INTO chat_messages (user_id, conversation_id, role, content) "
                     "VALUES (%s, gen_random_uuid(), 'user', 'orphan')", (orphan,))
    with migration_session(url) as conn:
        db = online.Online(conn, retry=FAST)
        with pytest.raises(Exception, match="violates foreign key constraint"):
            db.add_foreign_key(name, "chat_messages", ["user_id"], "users")
        # The NOT VALID constraint committed on its own (new rows are checked already); only VALIDATE failed.
        assert _constraint(url, name) == [(False,)]
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("DELETE FROM chat_messages WHERE user_id = %s", (orphan,))
        db.add_foreign_key(name, "chat_messages", ["user_id"], "users")  # run again: validates what is there
        assert _constraint(url, name) == [(True,)]
        db.add_foreign_key(name, "chat_messages", ["user_id"], "users")  # and again: nothing to do
    assert query(url, "SELECT count(*) FROM pg_constraint WHERE conname = %s", (name,)) == [(1,)]


def test_not_null_goes_through_a_validated_check_that_is_dropped_after(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    _messages(url, 30, model="'gpt'")
    _messages(url, 1, model="NULL")
    not_null = "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'chat_messages'::regclass AND attname = 'model'"
    check = online.not_null_check_name("chat_messages", "model")
    with migration_session(url) as conn:
        db = online.Online(conn, retry=FAST)
        with pytest.raises(Exception, match="violated by some row"):
            db.add_not_null("chat_messages", "model")
        assert query(url, not_null) == [(False,)] and _constraint(url, check) == [(False,)]
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("UPDATE chat_messages SET model = 'gpt' WHERE model IS NULL")
        db.add_not_null("chat_messages", "model")
        db.add_not_null("chat_messages", "model")  # already NOT NULL: nothing to do
    assert query(url, not_null) == [(True,)]
    assert _constraint(url, check) == []  # the helper check is gone once the column says it


class Stop(Exception):
    pass


def test_a_backfill_goes_in_batches_and_resumes_where_a_killed_run_left_off(
    released: tuple[str, ReleaseResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = released
    _messages(url, 2_500)
    monkeypatch.setattr(online, "TELL_EVERY", 0.0)
    filled = "SELECT count(*) FILTER (WHERE content_chars IS NOT NULL), count(*) FILTER (WHERE content_chars " \
             "IS DISTINCT FROM length(content)) FROM chat_messages"
    lines: list[str] = []

    def killed_after_two_batches(line: str) -> None:
        lines.append(line)
        if sum("rows so far" in seen for seen in lines) == 2:
            raise Stop

    with migration_session(url) as conn:
        db = online.Online(conn, progress=killed_after_two_batches, retry=FAST, lag=lambda _c: [])
        db.add_column("chat_messages", "content_chars", "integer")
        with pytest.raises(Stop):
            db.backfill("chat_messages", "content_chars = length(content)", pending="content_chars IS NULL",
                        batch_size=400, pause=0)
        first_run = query(url, filled)[0][0]
        assert first_run == 800  # two batches of 400 committed, each in its own transaction
        resumed: list[str] = []
        second_run = online.Online(conn, progress=resumed.append, lag=lambda _c: []).backfill(
            "chat_messages", "content_chars = length(content)", pending="content_chars IS NULL", batch_size=400,
            pause=0)
    assert first_run + second_run == 2_500  # no row updated twice
    assert query(url, filled)[0] == (2_500, 0)
    assert resumed[0] == "backfill of chat_messages: resuming at the first row still to do (batches of 400, 0 s apart)"
    assert resumed[-1].startswith("backfill of chat_messages: done, 1,700 rows updated in ")


def test_a_backfill_waits_while_a_replica_lags_beyond_the_bound(
    released: tuple[str, ReleaseResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake lag source (tests/ops/test_backfill_lag.py does this against a real streaming replica)."""
    url, _ = released
    _messages(url, 300)
    monkeypatch.setattr(online, "LAG_POLL", 0.01)
    seen: list[float] = [12.0, 12.0, 7.5, 0.4]  # one replica's replay lag at each look, then caught up

    def lag(_conn: Connection) -> list[tuple[str, float | None]]:
        return [("replica-1", seen.pop(0) if len(seen) > 1 else seen[0]), ("replica-2", None)]

    lines: list[str] = []
    with migration_session(url) as conn:
        db = online.Online(conn, progress=lines.append, lag=lag)
        db.add_column("chat_messages", "content_chars", "integer")
        updated = db.backfill("chat_messages", "content_chars = length(content)", pending="content_chars IS NULL",
                              batch_size=100, pause=0, max_replica_lag=5)
    assert updated == 300 and seen == [0.4]
    assert "backfill of chat_messages paused: replica replica-1 replays 12.0 s behind (more than 5 s)" in lines


def test_a_backfill_that_cannot_see_the_replicas_says_so_once(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    _messages(url, 10)
    lines: list[str] = []
    with migration_session(url) as conn:
        db = online.Online(conn, progress=lines.append, lag=lambda _c: None)
        db.add_column("chat_messages", "content_chars", "integer")
        db.backfill("chat_messages", "content_chars = length(content)", pending="content_chars IS NULL", batch_size=3,
                    pause=0)
    assert sum("cannot see the replicas' replay lag" in line for line in lines) == 1


def test_steps_refuse_to_run_inside_the_revisions_transaction(released: tuple[str, ReleaseResult]) -> None:
    url, _ = released
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=NullPool)
    with engine.connect() as conn, pytest.raises(DbopsError, match=r"inside `with online.steps\(\) as db:`"):
        online.Online(conn)
    engine.dispose()


def test_a_revision_whose_locks_are_held_is_rolled_back_and_retried_then_applied(
    released: tuple[str, ReleaseResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock discipline for every revision, helpers or not: its transaction gets a short lock_timeout and is rolled
    back and run again while an application's transaction holds the table."""
    url, _ = released
    _messages(url, 1)
    body = "CREATE TABLE feedback (id uuid PRIMARY KEY, body text)\nALTER TABLE chat_messages ADD COLUMN note text"
    project = project_copy(tmp_path, {"0003_note.py": revision_source("0003_note", HEAD, "add a note", body)})
    monkeypatch.setattr(migrate, "MIGRATIONS", project / "migrations")
    monkeypatch.setattr(online, "RETRY", online.LockRetry(timeouts_ms=(20, 40), first_pause=0.05, max_pause=0.2,
                                                          give_up_after=60))
    lines: list[str] = []
    with idle_transaction(url) as pid:
        releasing = InThread(lambda: release(url, environment="dev", admin_email=ADMIN_EMAIL,
                                             role_passwords=PASSWORDS, progress=lines.append))
        expected = "migration 0003_note (add a note) could not get its locks within 20ms (held by pid " \
                   f"{pid} (chat-service, idle in transaction, transaction open for "
        assert wait_until(lambda: any(line.startswith(expected) for line in lines), timeout=20), lines
        assert wait_until(lambda: any("within 40ms" in line and "rolled back attempt 3" in line for line in lines))
        # Rolled back whole: the table its first statement made is not there while it waits.
        assert query(url, "SELECT to_regclass('feedback')") == [(None,)]
        assert _insert_ms(url) is not None
    result = releasing.result()
    assert result.revision == "0003_note" and result.applied == ("0003_note",)
    assert query(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'") == [(1,)]
