"""Fixtures for the operations tests: a real primary with a real streaming replica."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from opshelpers import Replica, make_replica, streaming
from pgserver import PgServer, wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[PgServer, Replica]]:
    """Primary (pg_stat_statements preloaded and created) + one streaming replica on a slot."""
    primary = PgServer(extra_conf={"shared_preload_libraries": "'pg_stat_statements'"}).start()
    try:
        primary.execute("CREATE EXTENSION pg_stat_statements")
        replica = make_replica(primary)
        assert wait_until(lambda: streaming(primary), timeout=20), "the replica never started streaming"
        yield primary, replica
    finally:
        if primary.base is not None and (primary.base / "replica" / "postmaster.pid").exists():
            try:
                Replica(primary, primary.base / "replica", 0).stop()
            except subprocess.CalledProcessError:
                pass  # already stopped: stopping the primary is what matters
        primary.stop()


