"""`dbops metrics`: the three reports on a real server, with and without pg_stat_statements."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from cli_runner import run_dbops
from opshelpers import Replica
from pgserver import PgServer

from dbops.metrics import collect

pytestmark = pytest.mark.xdist_group("metrics")  # one worker runs this file's module-scoped servers


def test_reports_connections_sizes_and_slow_queries(cluster: tuple[PgServer, Replica]) -> None:
    primary, _ = cluster
    primary.execute("CREATE TABLE IF NOT EXISTS \"Odd Name\" (x text); INSERT INTO \"Odd Name\" "
                    "SELECT repeat('x', 100) FROM generate_series(1, 2000)")
    primary.execute("SELECT pg_sleep(0.12)")  # one slow statement (mean > 100 ms)
    primary.execute("SELECT 1")  # and a fast one
    with psycopg.connect(primary.url(), autocommit=True):  # a second connection to count
        report = collect(primary.url())
    assert report["pg_stat_statements"]["status"] == "ok"
    assert report["max_connections"] == 200
    postgres = next(c for c in report["connections"] if c["database"] == "postgres")
    assert postgres["connections"] >= 2 and postgres["newest_connection"]
    odd = next(t for t in report["tables"] if t["table"] == "Odd Name")
    assert odd["schema"] == "public" and odd["bytes"] > 200_000
    queries = [q["query"] for q in report["slow_queries"]]
    assert "SELECT pg_sleep($1)" in queries and "SELECT $1" not in queries
    slow = report["slow_queries"][queries.index("SELECT pg_sleep($1)")]
    assert slow["mean_ms"] >= 100 and slow["calls"] >= 1 and slow["database"] == "postgres"


def test_cli_table_and_json(cluster: tuple[PgServer, Replica]) -> None:
    primary, _ = cluster
    primary.execute("SELECT pg_sleep(0.11)")
    done = run_dbops("metrics", env={"DATABASE_URL": primary.url()})
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("Connections (") and "Table sizes" in text and "Slow queries (mean > 100 ms" in text
    assert "SELECT pg_sleep($1)" in text
    done = run_dbops("metrics", "--json", "--slow-ms", "50", env={"DATABASE_URL": primary.url()})
    report = json.loads(done.stdout)
    assert report["pg_stat_statements"] == {"status": "ok", "threshold_ms": 50.0}
    assert isinstance(report["slow_queries"], list)


def test_without_the_extension_in_this_database_it_says_so_and_how(admin_url: str) -> None:
    report = collect(admin_url)  # pg: preloaded, but CREATE EXTENSION never ran in this fresh database
    stats = report["pg_stat_statements"]
    assert stats["status"] == "not-created" and report["slow_queries"] is None
    assert "CREATE EXTENSION pg_stat_statements" in stats["message"]
    assert set(stats["how_to_enable"]) == {"aws", "gcp", "fly", "local"}
    assert "--shared-preload-libraries repmgr,pg_stat_statements" in stats["how_to_enable"]["fly"]
    done = run_dbops("metrics", "--provider", "aws", env={"DATABASE_URL": admin_url})
    assert done.returncode == 0, done.stderr
    assert "unavailable: pg_stat_statements is not created in this database" in done.stdout
    assert "aws rds reboot-db-instance --db-instance-identifier gaia-<env>" in done.stdout
    assert "fly postgres" not in done.stdout  # only the provider asked for


@pytest.fixture(scope="module")
def unloaded() -> Iterator[PgServer]:
    server = PgServer().start()  # no shared_preload_libraries
    try:
        server.execute("CREATE EXTENSION pg_stat_statements")  # created, but the library is not loaded
        yield server
    finally:
        server.stop()


def test_created_but_not_preloaded_is_reported_not_raised(unloaded: PgServer) -> None:
    done = run_dbops("metrics", "--json", env={"DATABASE_URL": unloaded.url()})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pg_stat_statements"]["status"] == "not-loaded"
    assert "shared_preload_libraries" in report["pg_stat_statements"]["message"]
    assert report["connections"] and report["slow_queries"] is None
