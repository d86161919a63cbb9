"""Finding 2: the concurrent index build's lock discipline, its progress, and a build a killed release left running."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from dbhelpers import ADMIN_EMAIL, HEAD, PASSWORDS, query
from matrix import insert_sample_rows
from pgserver import wait_until

from dbops import locking, migrate, online
from dbops.connect import APPLICATION_NAME
from dbops.release import ReleaseResult, release
from dbops.urls import parse_url

INDEX = "idx_chat_messages_conversation_created"
BUILDS = "SELECT pid, phase FROM pg_stat_progress_create_index WHERE datname = %s"


def _index_valid(url: str) -> list[tuple[object, ...]]:
    return query(url, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (f"public.{INDEX}",))


def test_an_idle_transaction_is_named_and_waited_out_and_a_left_over_build_is_cancelled(
    released: tuple[str, ReleaseResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = released
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn, locking.release_lock(conn):
        migrate.downgrade(parse_url(url), target="0001_seed_schema", wait_seconds=10)
    with psycopg.connect(url, autocommit=True) as conn:
        insert_sample_rows(conn)
    monkeypatch.setattr(online, "BUILD_LOCK_TIMEOUT", "300ms")
    monkeypatch.setattr(online, "RETRY_PAUSE", 0.1)
    monkeypatch.setattr(online, "ORPHAN_POLL", 0.1)

    # An application's transaction, left idle; then the build of a release that was killed, stuck behind it (as the
    # old revision left it: no lock timeout, no client check).
    blocker = psycopg.connect(url, application_name="chat-service")
    blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # its snapshot is what a build waits out
    blocker.execute("SELECT count(*) FROM chat_messages")
    orphan = psycopg.connect(url, autocommit=True, application_name=APPLICATION_NAME)
    orphan_error: list[BaseException] = []

    def orphan_build() -> None:
        try:
            orphan.execute(f"CREATE INDEX CONCURRENTLY {INDEX} ON chat_messages (conversation_id, created_at)")
        except psycopg.Error as exc:
            orphan_error.append(exc)

    orphan_thread = threading.Thread(target=orphan_build, daemon=True)
    orphan_thread.start()
    lines: list[str] = []
    outcome: list[object] = []
    try:
        assert wait_until(lambda: query(url, BUILDS, (dbname,)), timeout=10)

        def run() -> None:
            try:
                outcome.append(release(url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS,
                                       progress=lines.append))
            except BaseException as exc:
                outcome.append(exc)

        started = time.monotonic()
        releasing = threading.Thread(target=run, daemon=True)
        releasing.start()
        # The left-over build is cancelled (it was only waiting), and the release never collides with it.
        orphan_thread.join(timeout=20)
        assert not orphan_thread.is_alive() and isinstance(orphan_error[0], psycopg.errors.QueryCanceled)
        # Progress names what the build waits for, within seconds, not hours.
        expected = f"index {INDEX} waits for pid {blocker.info.backend_pid} (chat-service, idle in transaction, "
        assert wait_until(lambda: any(expected in line for line in lines), timeout=20), lines
        assert time.monotonic() - started < 20
        assert any(line.startswith("cancelled the index build on chat_messages that a killed release left waiting")
                   for line in lines), lines
        assert releasing.is_alive()  # still retrying while the transaction stays open
    finally:
        blocker.close()
        orphan.close()
    releasing.join(timeout=60)
    assert outcome and isinstance(outcome[0], ReleaseResult), (outcome, lines)
    assert outcome[0].revision == HEAD
    assert _index_valid(url) == [(True,)]
    assert query(url, BUILDS, (dbname,)) == []


def test_a_left_over_build_that_is_building_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(online, "ORPHAN_POLL", 0.05)
    rows = iter([[(4242, "building index: scanning table", 10, 100)], [(4242, "building index: sorting", 0, 0)], []])
    monkeypatch.setattr(online, "_orphan_builds", lambda _conn, _table: next(rows))
    cancelled: list[object] = []
    monkeypatch.setattr(online, "_as_login", lambda *args: cancelled.append(args) or [])
    lines: list[str] = []
    online.settle_orphan_builds(None, "chat_messages", lines.append)  # type: ignore[arg-type]
    assert lines == [
        "waiting for the index build on chat_messages that a killed release left running "
        "(pid 4242, building index: scanning table, 10 of 100 blocks)",
        "waiting for the index build on chat_messages that a killed release left running "
        "(pid 4242, building index: sorting)",
    ]
    assert cancelled == []
