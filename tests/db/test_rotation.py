"""Issue 17 on a real PostgreSQL: a rotation under load (bench/rotation.py) fails no login and no query with alternating
logins, while the naive ALTER ROLE on the active login fails logins until every client has the new URL. Counts only,
never timings."""

from __future__ import annotations

from pgserver import PgServer

from bench.rotation import rotate


def test_alternating_logins_rotate_without_a_failed_login_and_the_naive_way_fails(pg: PgServer) -> None:
    results = {}
    for strategy in ("alternating", "naive"):
        server = PgServer().start()  # roles are cluster-wide: a cluster per strategy
        try:
            _, url = server.create_database()
            results[strategy] = rotate(url, strategy, seconds=1.0, lag=0.4, delay=0.1, pool=3)
        finally:
            server.stop()
    alternating, naive = results["alternating"], results["naive"]
    assert alternating["loop"].tried > 20 and alternating["lagging"].tried > 20
    assert all(c.failed_logins == 0 and c.failed_queries == 0 for c in alternating.values())
    assert alternating["pool"].queries > 20  # connections opened before the rotation kept working
    assert naive["loop"].failed_logins + naive["lagging"].failed_logins > 0
    assert naive["pool"].failed_queries == 0  # an open session survives ALTER ROLE; new logins are what fail
