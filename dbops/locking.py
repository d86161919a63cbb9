"""One release at a time per database, through a session-level advisory lock.

The lock is polled with `pg_try_advisory_lock` on an autocommit connection, so a waiting release holds no transaction
(and no snapshot) between polls. A blocking `pg_advisory_lock` would sit inside a transaction, and `CREATE INDEX
CONCURRENTLY` in the running release waits for every such transaction to end: a deadlock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import psycopg

from dbops.errors import DbopsError

# Arbitrary but fixed: the bytes of "gaiadb". Advisory locks are scoped to the current database.
LOCK_KEY = 0x67_61_69_61_64_62
POLL_SECONDS = 0.2
DEFAULT_LOCK_WAIT = 900.0  # a long migration by another release may legitimately take minutes


@contextmanager
def release_lock(
    conn: psycopg.Connection[tuple[object, ...]],
    *,
    wait_seconds: float = DEFAULT_LOCK_WAIT,
    progress: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the release lock for the block; `conn` must be in autocommit mode."""
    if not conn.autocommit:
        raise ValueError("the release lock must be polled on an autocommit connection")
    deadline = time.monotonic() + wait_seconds
    told = False
    while not _try_lock(conn):
        if time.monotonic() >= deadline:
            raise DbopsError(
                f"another release held the database lock for more than {wait_seconds:g} s; "
                "wait for it to finish and run the release again"
            )
        if progress and not told:
            progress("waiting for another release of this database to finish")
            told = True
        time.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))  # noqa: S311 - jitter, not security
    try:
        yield
    finally:
        # The lock belongs to the session: if unlocking fails the connection is going away and takes the lock with it,
        # so don't mask the block's own outcome.
        if not conn.closed and not conn.broken:
            with suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _try_lock(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        return conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone() == (True,)
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or type(exc).__name__
        raise DbopsError(f"taking the release lock failed: {reason}") from None
