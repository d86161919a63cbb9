"""Helpers for the operations tests: a real streaming replica of a PgServer (pg_basebackup -R)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cli_runner import ROOT
from pgserver import SUPERUSER, SUPERUSER_PASSWORD, PgServer, free_port, pg_ctl, run_as_server_user, server_bindir

SLOT = "gaia_replica_1"
FAKES = ROOT / "tests" / "e2e" / "fakes"


@dataclass
class Replica:
    """A hot standby of a PgServer, in its own data directory under the primary's base."""

    primary: PgServer
    data_dir: Path
    port: int

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        pg_ctl(self.data_dir, "-w", "start", log_file=self.data_dir.parent / "replica.log")

    def stop(self) -> None:
        pg_ctl(self.data_dir, "-m", "fast", "-w", "stop")

    def replayed(self, lsn: str) -> bool:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
        return bool(row and row[0])


def make_replica(primary: PgServer, slot: str = SLOT) -> Replica:
    """`pg_basebackup -R` (standby.signal + primary_conninfo) with a physical slot, started on a free port."""
    assert primary.base is not None
    data = primary.base / "replica"
    run_as_server_user(
        str(server_bindir() / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER,
        "-D", str(data), "-R", "-X", "stream", "-c", "fast", "-C", "-S", slot, "--no-sync", "-w",
        env={**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD},
    )
    port = free_port()
    # runuser keeps the environment; the file is written by us (root) then read by the server user.
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"port = {port}\nunix_socket_directories = '{primary.base}'\nhot_standby = on\n"
                "wal_receiver_status_interval = 1s\n")
    replica = Replica(primary=primary, data_dir=data, port=port)
    replica.start()
    return replica


def streaming(primary: PgServer) -> bool:
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
    return bool(row and row[0])


def current_lsn(primary: PgServer) -> str:
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])
