"""Figures 1 and 2: what the release provider costs the database, against the seed's init script (`psql`).

Both sides run on the same throwaway PostgreSQL (log_connections=on, so every connection is counted from its log).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ROOT

NOOP_DIFFS = 5


# What the seed's scripts/init-database-portable.sh pipes into psql after the schema: the admin user and key, for
# dev. The key's hash uses encode(sha256(...), 'hex'): the seed's bare SHA256() is bytea and overflows varchar(64),
# which would stop the script before it finishes (DESIGN.md, seed bugs).
SEED_INSERTS = """
INSERT INTO users (email, name) VALUES ('admin@dev.gaia.com', 'Admin');
INSERT INTO api_keys (user_id, key_hash, name, permissions)
SELECT id, encode(sha256('admin-key-dev'::bytea), 'hex'), 'Admin Key', '{"admin": true}'::jsonb
FROM users WHERE email = 'admin@dev.gaia.com';
"""


def seed_sql() -> str:
    return (ROOT / "tests" / "db" / "seed_schema.sql").read_text() + SEED_INSERTS


@dataclass(frozen=True)
class PsqlRun:
    seconds: float
    connections: int
    ok: bool
    error: str


def run_psql(psql: Path, url: str, sql_file: Path, server: Any) -> PsqlRun:
    from provider_process import connections_received

    before = connections_received(server)
    started = time.perf_counter()
    done = subprocess.run([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(sql_file), url],
                          capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    time.sleep(0.2)  # the server writes its log line asynchronously
    error = done.stderr.strip().splitlines()[0] if done.returncode else ""
    return PsqlRun(seconds, connections_received(server) - before, done.returncode == 0, error)


@dataclass(frozen=True)
class ReleaseFigures:
    diff_connections: int  # over NOOP_DIFFS no-op diffs
    diff_ms: float  # per diff
    fresh_seconds: float
    again_seconds: float
    seed_fresh: PsqlRun
    seed_again: PsqlRun


def measure(server: Any, workdir: Path) -> ReleaseFigures:
    from pgserver import server_bindir
    from provider_process import ProviderProcess, connections_received, release_props
    from pulumi.runtime.proto import provider_pb2

    _, url = server.create_database()
    props = release_props(url)
    with ProviderProcess() as provider:
        provider.configure()
        checked, failures = provider.check(props)
        if failures:
            raise RuntimeError(f"the provider refused the benchmark's inputs: {failures}")
        started = time.perf_counter()
        id_, outs = provider.create(checked)
        fresh = time.perf_counter() - started

        time.sleep(0.2)
        before = connections_received(server)
        started = time.perf_counter()
        for _ in range(NOOP_DIFFS):
            if provider.diff(id_, outs, checked).changes != provider_pb2.DiffResponse.DIFF_NONE:
                raise RuntimeError("the release provider's diff saw a change in unchanged inputs")
        diff_ms = (time.perf_counter() - started) * 1000 / NOOP_DIFFS
        time.sleep(0.2)
        diff_connections = connections_received(server) - before

        started = time.perf_counter()
        provider.update(id_, outs, checked)
        again = time.perf_counter() - started

    sql_file = workdir / "seed-init.sql"
    sql_file.write_text(seed_sql())
    _, seed_url = server.create_database()
    psql = server_bindir() / "psql"
    seed_fresh = run_psql(psql, seed_url, sql_file, server)
    seed_again = run_psql(psql, seed_url, sql_file, server)
    return ReleaseFigures(diff_connections, diff_ms, fresh, again, seed_fresh, seed_again)
