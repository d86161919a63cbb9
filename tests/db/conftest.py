from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from dbhelpers import ADMIN_EMAIL, ADMIN_KEY, PASSWORDS
from pgserver import PgServer

from dbops.release import ReleaseResult, release


@pytest.fixture
def released(admin_url: str) -> tuple[str, ReleaseResult]:
    """A fresh database after one release (as the non-superuser admin) with known passwords and admin key."""
    return admin_url, release(
        admin_url, environment="dev", admin_email=ADMIN_EMAIL, role_passwords=PASSWORDS, admin_api_key=ADMIN_KEY
    )


@pytest.fixture(scope="session")
def superuser(pg: PgServer) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A superuser session on the `postgres` database, with pg_stat_statements queryable."""
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield conn
