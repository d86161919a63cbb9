from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgserver import PgServer


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One real PostgreSQL for the whole session (pg_stat_statements preloaded, connections logged)."""
    server = PgServer(
        extra_conf={
            "shared_preload_libraries": "'pg_stat_statements'",
            "log_connections": "on",
        }
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin_url(pg: PgServer) -> str:
    """The URL of a fresh, empty database whose owner is a non-superuser admin (CREATEROLE, CREATEDB)."""
    _, url = pg.create_database()
    return url
