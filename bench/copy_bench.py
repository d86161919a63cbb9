"""Figure 6: `python -m dbops copy` of a released staging database between two PostgreSQL servers on this machine.

The source is released (head, roles, admin seed) and filled with `rows` rows over the four tables (a tenth users,
a tenth API keys, six tenths chat messages, two tenths assets); the target is a new, empty database on a second
server. The copy runs as the real CLI; its own JSON gives the rows, the phases' seconds and rows per second. The
services' downtime is the whole copy (writes are stopped for it).

    venv/bin/python -m bench.copy_bench --rows 100000      # prints the figure's row for bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import psycopg

from bench import ROOT
from dbops.release import release

ENVIRONMENT = "staging"
ADMIN_EMAIL = "admin@staging.gaia.com"
LABEL = "6. dbops copy: staging between two servers (rows; pg_dump/pg_restore jobs)"


@dataclass(frozen=True)
class CopyFigures:
    rows: int
    jobs: int
    seconds: dict[str, float]
    rows_per_second: int

    def row(self) -> tuple[str, str, str, str, str]:
        s = self.seconds
        phases = ", ".join(f"{k} {s[k]:.2f} s" for k in ("release", "dump", "restore", "verify", "migrate"))
        return (f"{LABEL.replace('(rows', f'({self.rows:,} rows').replace('jobs)', f'{self.jobs} jobs)')}: "
                "rows/s; total = downtime",
                f"{self.rows_per_second:,} rows/s; {s['total']:.2f} s ({phases})",
                "", "every table's count and checksum equal", "yes")


def fill(url: str, rows: int) -> None:
    """Release `url` as staging and fill it with `rows` rows over the four tables (deterministic content)."""
    release(url, environment=ENVIRONMENT, admin_email=ADMIN_EMAIL)
    users = max(1, rows // 10)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute(
            "INSERT INTO users (id, email, name, created_at) SELECT md5('u' || i)::uuid, 'user' || i || '@x.io', "
            "'Zoë ' || i, timestamp '2026-01-01' + i * interval '1 second' FROM generate_series(1, %s) i", (users,))
        conn.execute(
            "INSERT INTO api_keys (user_id, key_hash, name, permissions, is_active) SELECT md5('u' || i)::uuid, "
            "md5('k' || i) || md5('k' || i), 'key ' || i, jsonb_build_object('scope', 'chat', 'n', i), i %% 3 <> 0 "
            "FROM generate_series(1, %s) i", (users,))
        conn.execute(
            "INSERT INTO chat_messages (user_id, conversation_id, role, content, model, tokens_used) "
            "SELECT md5('u' || (i %% %s + 1))::uuid, md5('c' || (i / 20))::uuid, "
            "CASE WHEN i %% 2 = 0 THEN 'user' ELSE 'assistant' END, repeat('héllo wörld ', 1 + i %% 40), "
            "'gpt', i %% 900 FROM generate_series(1, %s) i", (users, rows * 6 // 10))
        conn.execute(
            "INSERT INTO assets (user_id, type, name, metadata, status) SELECT md5('u' || (i %% %s + 1))::uuid, "
            "'image', 'a' || i || '.png', jsonb_build_object('w', i, 'ü', 'ß'), 'ready' "
            "FROM generate_series(1, %s) i", (users, rows - 2 * users - rows * 6 // 10))
        conn.execute("ANALYZE")


def run_copy(source_url: str, target_url: str, *, jobs: int | None = None,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI, URLs in its environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(SOURCE_DATABASE_URL=source_url, DATABASE_URL=target_url, **(extra_env or {}))
    argv = [sys.executable, "-m", "dbops", "copy", "--environment", ENVIRONMENT, "--admin-email", ADMIN_EMAIL]
    argv += [f"--jobs={jobs}"] if jobs else []
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600)


def measure(rows: int, jobs: int | None = None) -> CopyFigures:
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import PgServer

    source_server, target_server = PgServer().start(), None
    try:
        target_server = PgServer().start()
        _, source = source_server.create_database()
        _, target = target_server.create_database()
        fill(source, rows)
        done = run_copy(source, target, jobs=jobs)
        if done.returncode != 0:
            raise RuntimeError(f"dbops copy failed: {done.stderr.strip().splitlines()[-1]}")
        out: dict[str, Any] = json.loads(done.stdout)
    finally:
        source_server.stop()
        if target_server is not None:
            target_server.stop()
    return CopyFigures(rows=int(out["rows"]), jobs=int(out["jobs"]), seconds=out["seconds"],
                       rows_per_second=int(out["rowsPerSecond"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.copy_bench")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args(argv)
    figures = measure(args.rows, args.jobs)
    print("| " + " | ".join(figures.row()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
