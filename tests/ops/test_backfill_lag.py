"""dbops.online's batched backfill against a real streaming replica that replays late (recovery_min_apply_delay):
it pauses while the replica's replay lag exceeds the bound, says so, and finishes once the replica catches up."""

from __future__ import annotations

import threading

import psycopg
import pytest
from opshelpers import Replica
from pgserver import PgServer, wait_until
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from dbops import online

pytestmark = pytest.mark.xdist_group("backfill_lag")  # one worker runs this file's module-scoped servers


def _apply_delay(replica: Replica, delay: str) -> None:
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        conn.execute("SELECT pg_reload_conf()")


def test_a_backfill_pauses_while_a_real_replica_replays_behind_the_bound(
    cluster: tuple[PgServer, Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    primary, replica = cluster
    primary.execute("DROP TABLE IF EXISTS lagged")
    primary.execute("CREATE TABLE lagged (id bigint PRIMARY KEY, v int NOT NULL, w int)")
    primary.execute("INSERT INTO lagged (id, v) SELECT g, g FROM generate_series(1, 20000) g")
    monkeypatch.setattr(online, "LAG_POLL", 0.2)
    monkeypatch.setattr(online, "TELL_EVERY", 0.0)
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(primary.url(), autocommit=True),
                           poolclass=NullPool)
    lines: list[str] = []
    outcome: list[object] = []
    _apply_delay(replica, "3s")
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")

            def run() -> None:
                try:
                    outcome.append(online.Online(conn, progress=lines.append).backfill(
                        "lagged", "w = v * 2", pending="w IS NULL", batch_size=500, pause=0.1, max_replica_lag=1.0))
                except BaseException as exc:
                    outcome.append(exc)

            backfilling = threading.Thread(target=run, daemon=True)
            backfilling.start()
            assert wait_until(lambda: any(" paused: replica " in line and "(more than 1 s)" in line for line in lines),
                              timeout=30), lines
            paused = next(line for line in lines if " paused: replica " in line)
            behind = float(paused.split(" replays ", 1)[1].split(" s behind", 1)[0])
            assert behind >= 1.0, paused  # the line rounds to 0.1 s; it paused because the lag was over 1 s
            done = lambda: sum("rows so far" in line for line in lines)  # noqa: E731
            before = done()
            assert backfilling.is_alive()
            _apply_delay(replica, "0")  # the replica catches up; the backfill goes on
            backfilling.join(timeout=60)
            assert outcome == [20000], (outcome, lines)
            assert done() > before
    finally:
        _apply_delay(replica, "0")
        engine.dispose()
    assert wait_until(lambda: replica.replayed(_lsn(primary)), timeout=20)
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM lagged WHERE w = v * 2").fetchone() == (20000,)


def _lsn(primary: PgServer) -> str:
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])
