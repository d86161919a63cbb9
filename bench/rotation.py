"""Figure 7: a service password rotation under load, alternating logins (credentialsVersion) vs the naive baseline.

`venv/bin/python -m bench.rotation [--seconds S]` starts its own PostgreSQL, releases a database, then for each
strategy runs, against the chat service's login:

- a client loop that opens a *new connection* every few milliseconds with the URL it last read from a stand-in secret
  store (a dict, as Secrets Manager / Fly secrets would hold it) and runs one query on it;
- a lagging client that re-reads the store only every `--lag` seconds (a replica or process that has not reloaded);
- a pool of connections opened before the rotation, each running a query every few milliseconds throughout.
The store gets the new URL `--delay` seconds after the release (the publish step, the secret store's propagation).

Mid-run the rotation happens the way `pulumi up` does it: the release against the live database, then the store is
given the new URL (the publish step runs after the release). Alternating: the release sets only the inactive login's
(gaia_chat_alt) password, and the URL switches to it. Naive: `ALTER ROLE gaia_chat PASSWORD` on the active login
(the release given chat's new password), then the URL changes. Every failed login and failed query is counted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENT, EMAIL = "dev", "admin@dev.gaia.com"


@dataclass
class Counts:
    tried: int = 0
    failed_logins: int = 0
    queries: int = 0
    failed_queries: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **changes: int) -> None:
        with self.lock:
            for key, value in changes.items():
                setattr(self, key, getattr(self, key) + value)


def _client(store: dict[str, str], counts: Counts, stop: threading.Event, every: float, lag: float) -> None:
    url, read_at = store["chat"], time.monotonic()
    while not stop.is_set():
        if time.monotonic() - read_at >= lag:
            url, read_at = store["chat"], time.monotonic()
        counts.add(tried=1)
        try:
            conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
        except psycopg.OperationalError as error:
            counts.add(failed_logins=1)
            if len(counts.errors) < 3:
                counts.errors.append(str(error).strip().splitlines()[-1][:120])
            time.sleep(every)
            continue
        try:
            counts.add(queries=1)
            conn.execute("SELECT count(*) FROM chat_messages").fetchone()
        except psycopg.Error:
            counts.add(failed_queries=1)
        finally:
            conn.close()
        time.sleep(every)


def _pooled(conn: psycopg.Connection[tuple[object, ...]], counts: Counts, stop: threading.Event) -> None:
    while not stop.is_set():
        counts.add(queries=1)
        try:
            conn.execute("SELECT count(*) FROM chat_messages").fetchone()
        except psycopg.Error:
            counts.add(failed_queries=1)
        time.sleep(0.005)


def rotate(admin_url: str, strategy: str, *, seconds: float, lag: float, delay: float, pool: int = 5
           ) -> dict[str, Counts]:
    """One rotation under load; returns the counts of the fresh-connection loop, the lagging client and the pool."""
    from dbops.names import PASSWORD_LOGINS
    from dbops.release import release
    from dbops.urls import with_credentials

    passwords = {login: f"{login}-v1-0123456789abcdef" for login in PASSWORD_LOGINS}
    release(admin_url, environment=ENVIRONMENT, admin_email=EMAIL, role_passwords=passwords)
    store = {"chat": with_credentials(admin_url, user="gaia_chat", password=passwords["chat"])}
    counts = {"loop": Counts(), "lagging": Counts(), "pool": Counts()}
    stop = threading.Event()
    pooled = [psycopg.connect(store["chat"], autocommit=True) for _ in range(pool)]
    threads = [threading.Thread(target=_client, args=(store, counts["loop"], stop, 0.003, 0.0)),
               threading.Thread(target=_client, args=(store, counts["lagging"], stop, 0.003, lag)),
               *[threading.Thread(target=_pooled, args=(conn, counts["pool"], stop)) for conn in pooled]]
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    if strategy == "alternating":  # credentialsVersion 1 -> 2: only gaia_chat_alt's password is new
        new = {**passwords, "chat_alt": "chat_alt-v2-0123456789abcdef"}
        unchanged = [login for login in PASSWORD_LOGINS if login != "chat_alt"]
        release(admin_url, environment=ENVIRONMENT, admin_email=EMAIL, role_passwords=new,
                unchanged_passwords=unchanged)
        time.sleep(delay)  # the publish step and the store's propagation
        store["chat"] = with_credentials(admin_url, user="gaia_chat_alt", password=new["chat_alt"])
    else:  # naive: the active login's password changes, then its URL
        new = {**passwords, "chat": "chat-v2-0123456789abcdef"}
        unchanged = [login for login in PASSWORD_LOGINS if login != "chat"]
        release(admin_url, environment=ENVIRONMENT, admin_email=EMAIL, role_passwords=new,
                unchanged_passwords=unchanged)
        time.sleep(delay)
        store["chat"] = with_credentials(admin_url, user="gaia_chat", password=new["chat"])
    time.sleep(seconds / 2 + lag)
    stop.set()
    for thread in threads:
        thread.join()
    for conn in pooled:
        conn.close()
    return counts


def measure(seconds: float = 2.0, lag: float = 0.5, delay: float = 0.2) -> dict[str, dict[str, Counts]]:
    """Both strategies, each on a fresh cluster of its own (roles are cluster-wide)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import PgServer

    results: dict[str, dict[str, Counts]] = {}
    for strategy in ("alternating", "naive"):
        server = PgServer().start()
        try:
            _, url = server.create_database()
            results[strategy] = rotate(url, strategy, seconds=seconds, lag=lag, delay=delay)
        finally:
            server.stop()
    return results


def describe(counts: dict[str, Counts]) -> str:
    loop, lagging, pool = counts["loop"], counts["lagging"], counts["pool"]
    tried = loop.tried + lagging.tried
    failed = loop.failed_logins + lagging.failed_logins
    queries = loop.queries + lagging.queries + pool.queries
    failed_queries = loop.failed_queries + lagging.failed_queries + pool.failed_queries
    return (f"{tried} connections tried, {failed} failed logins ({lagging.failed_logins} of them the lagging "
            f"client's); {queries} queries, {failed_queries} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="load around the rotation (half before)")
    parser.add_argument("--lag", type=float, default=0.5, help="how late the lagging client reloads the store")
    parser.add_argument("--delay", type=float, default=0.2,
                        help="between the release and the store holding the new URL (publish, propagation)")
    args = parser.parse_args(argv)
    results = measure(args.seconds, args.lag, args.delay)
    print("| 7. Service password rotation under load | alternating logins (credentialsVersion) | naive ALTER ROLE "
          "on the active login | goal | met |")
    met = results["alternating"]["loop"].failed_logins + results["alternating"]["lagging"].failed_logins == 0
    print(f"| {args.seconds:g} s: new connection every 3 ms, a client reloading every {args.lag:g} s, 5 pooled; "
          f"the store gets the new URL {args.delay:g} s after the release "
          f"| {describe(results['alternating'])} | {describe(results['naive'])} | 0 failed | "
          f"{'yes' if met else 'no'} |")
    for strategy, counts in results.items():
        for name, count in counts.items():
            if count.errors:
                print(f"{strategy} {name}: e.g. {count.errors[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
