"""`dbops health` against a real primary and a real streaming replica (tests/ops/conftest.py)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import psycopg
import pytest
from cli_runner import run_dbops
from opshelpers import Replica, current_lsn, streaming
from pgserver import PgServer, free_port, wait_until

from dbops.health import DEFAULT_MAX_LAG, _primary, check

pytestmark = pytest.mark.xdist_group("health")  # one worker runs this file's module-scoped servers


def beat(primary: PgServer) -> None:
    """One committed write on the primary (each test makes its own table if it is the first to run)."""
    primary.execute("CREATE TABLE IF NOT EXISTS beat (at timestamptz); INSERT INTO beat VALUES (now())")


def seed_lag(replica: Replica) -> float:
    """What the seed's query reports on the replica: the age of the last replayed transaction."""
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))").fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _replayed_all(primary: PgServer, replica: Replica) -> None:
    lsn = current_lsn(primary)
    assert wait_until(lambda: replica.replayed(lsn), timeout=10)


def test_primary_reports_its_streaming_replica(cluster: tuple[PgServer, Replica]) -> None:
    primary, replica = cluster
    beat(primary)
    _replayed_all(primary, replica)
    # replay_lag is NULL for the moment a WAL record (e.g. a standby snapshot) is in flight without a timing sample.
    assert wait_until(lambda: isinstance(check(primary.url())["replicas"][0]["replay_lag"], float), timeout=10)
    result = check(primary.url(), expect_replicas=1)
    assert result["status"] == "healthy", result
    assert result["responsive"] is True and result["role"] == "primary"
    assert result["replication_lag"] == 0
    [info] = result["replicas"]
    assert info["name"] == "gaia_replica_1" and info["state"] == "streaming" and info["client_addr"] == "127.0.0.1"
    assert info["replay_lag"] is None or 0 <= info["replay_lag"] < 5


def test_idle_replica_lag_is_zero_where_the_seed_query_keeps_growing(cluster: tuple[PgServer, Replica]) -> None:
    primary, replica = cluster
    beat(primary)
    _replayed_all(primary, replica)
    # The primary stays idle until the seed's query reports over a second of "lag" that is not there.
    assert wait_until(lambda: seed_lag(replica) > 1.0, timeout=10)
    result = check(replica.url())
    assert result["status"] == "healthy", result
    assert result["role"] == "replica" and result["wal_receiver"] == "streaming"
    assert result["replication_lag"] == 0.0


def test_a_replica_behind_is_a_number_and_unhealthy_past_max_lag(cluster: tuple[PgServer, Replica]) -> None:
    primary, replica = cluster
    beat(primary)
    _replayed_all(primary, replica)  # a replayed commit to measure from, even when this test runs alone
    # The primary stays idle until the last replayed commit is over a second old (as in the test above).
    assert wait_until(lambda: seed_lag(replica) > 1.0, timeout=10)
    with psycopg.connect(replica.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        try:
            # A pause is only requested until the startup process honours it (PostgreSQL docs,
            # pg_get_wal_replay_pause_state): wait for it, so the next commit is surely not replayed.
            assert wait_until(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",),
                              timeout=10)
            beat(primary)  # received, not replayed: the replica is behind
            # Replay is paused, so the age of its last replayed commit only grows: past half a second soon (a commit
            # the primary made on its own, e.g. autovacuum's analyze, may have been replayed just before the pause).
            assert wait_until(lambda: (check(replica.url())["replication_lag"] or 0.0) > 0.5, timeout=10)
            result = check(replica.url(), max_lag=0.5)
            assert isinstance(result["replication_lag"], float) and result["replication_lag"] > 0.5
            assert result["status"] == "unhealthy"
            assert any("WAL replay is paused" in r for r in result["reasons"])
            assert any("replays" in r and "behind (more than 0.5 s)" in r for r in result["reasons"])
        finally:
            conn.execute("SELECT pg_wal_replay_resume()")
    _replayed_all(primary, replica)
    assert check(replica.url())["status"] == "healthy"


def test_cli_prints_json_and_exits_zero_when_healthy(cluster: tuple[PgServer, Replica]) -> None:
    primary, replica = cluster
    done = run_dbops("health", "--expect-replicas", "1", env={"DATABASE_URL": primary.url()})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "healthy" and result["replicas"][0]["state"] == "streaming"
    done = run_dbops("health", "--max-lag", "60", env={"DATABASE_URL": replica.url()})
    assert done.returncode == 0 and json.loads(done.stdout)["role"] == "replica"


def test_a_non_privileged_login_still_gets_an_answer(cluster: tuple[PgServer, Replica]) -> None:
    primary, _ = cluster
    primary.execute("DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN PASSWORD 'plain-pw'")
    result = check(primary.url("plain", "plain-pw"))
    assert result["status"] == "healthy" and result["replicas"][0]["state"] == "unknown"
    assert "pg_monitor" in result["note"]


def test_stopped_replica_turns_the_primary_unhealthy_with_the_reason(cluster: tuple[PgServer, Replica]) -> None:
    primary, replica = cluster
    replica.stop()
    try:
        assert wait_until(lambda: not streaming(primary), timeout=10)
        done = run_dbops("health", "--expect-replicas", "1", env={"DATABASE_URL": primary.url()})
        assert done.returncode == 2, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "unhealthy" and result["responsive"] is True and result["replicas"] == []
        assert "replication slot gaia_replica_1 has no replica connected" in " ".join(result["reasons"])
        assert "0 of 1 expected replicas are streaming" in result["reasons"]
    finally:
        replica.start()
    assert wait_until(lambda: streaming(primary), timeout=20)
    assert check(primary.url(), expect_replicas=1)["status"] == "healthy"


def test_a_replica_whose_primary_is_gone_is_unhealthy(cluster: tuple[PgServer, Replica]) -> None:
    """Its lag reads 0 (everything received is replayed), so only the missing WAL receiver tells."""
    primary, replica = cluster
    primary.stop_server()
    try:
        time.sleep(1)  # the WAL receiver notices the closed connection and exits
        results = []
        for _ in range(6):  # between retries (every 5 s) the receiver may be starting: unhealthy either way
            results.append(check(replica.url()))
            time.sleep(0.5)
        for result in results:
            assert result["status"] == "unhealthy" and result["role"] == "replica", result
            assert any("WAL" in reason for reason in result["reasons"]), result
        assert any(result["wal_receiver"] == "stopped" for result in results), results
        assert any("no WAL receiver" in " ".join(result["reasons"]) for result in results), results
    finally:
        primary.start_server()
    assert wait_until(lambda: streaming(primary), timeout=30)
    assert wait_until(lambda: check(replica.url())["status"] == "healthy", timeout=10)


class _Catalog:
    """What the primary's health queries read, in order: pg_stat_replication's rows, then the inactive slots."""

    def __init__(self, *answers: list[tuple[object, ...]]) -> None:
        self.answers = list(answers)

    def execute(self, _query: str) -> Any:
        rows = self.answers.pop(0)
        return type("Rows", (), {"fetchall": lambda _self: rows, "__iter__": lambda _self: iter(rows)})()


def test_a_connected_replica_that_is_not_streaming_makes_the_primary_unhealthy() -> None:
    # A standby still catching up after a restart (or taking a base backup) is connected but serves stale reads;
    # such states last seconds on a real server, so the catalog is given here.
    catching_up = ("gaia_replica_1", "127.0.0.1", "catchup", "async", None, False, 16_777_216.0)
    result: dict[str, Any] = {"reasons": []}
    _primary(_Catalog([catching_up], []), result, DEFAULT_MAX_LAG, 1)  # type: ignore[arg-type]
    assert result["reasons"] == ["replica gaia_replica_1 is catchup, not streaming",
                                 "0 of 1 expected replicas are streaming"]
    assert result["replicas"][0]["state"] == "catchup"


def test_unreachable_server_is_unhealthy_not_a_traceback() -> None:
    url = f"postgresql://u:secret-pw@127.0.0.1:{free_port()}/db"
    done = run_dbops("health", "--timeout", "2", env={"DATABASE_URL": url})
    assert done.returncode == 2 and done.stderr == ""
    result = json.loads(done.stdout)
    assert result["responsive"] is False and result["role"] is None
    assert "connection refused" in result["error"] and "secret-pw" not in done.stdout


def test_a_server_that_never_answers_is_cut_off_at_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts TCP (the kernel's backlog) but never speaks the protocol
    port = listener.getsockname()[1]
    try:
        result = check(f"postgresql://u:pw@127.0.0.1:{port}/db", timeout=2)
    finally:
        listener.close()
    assert result["status"] == "unhealthy" and result["responsive"] is False and result["role"] is None
    assert result["error"] == f"PostgreSQL at 127.0.0.1:{port} did not answer within 2 s (connect timeout)"
    assert result["reasons"] == [result["error"]]


def test_missing_database_url_is_one_sentence() -> None:
    done = run_dbops("health")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: set DATABASE_URL") and "Traceback" not in done.stderr
