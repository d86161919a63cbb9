"""Figure 8 (issue 19): 240 clients (4 services x 60) against a primary with max_connections = 100, directly and
through the local stack's PgBouncer, side by side in one run.

The cluster and the pooler are made by the local provider's own scripts (create.sh, pooler.sh: PostgreSQL's default
max_connections = 100, PgBouncer in transaction mode with 20 server connections per login and at most 60 to the
database), released by the real release; every client logs in with its service's own login, verify-full TLS against
the cluster's CA, on 127.0.0.1 only. Each phase: all clients connect at once (connect_timeout 5 s), then every client
that got in runs `BEGIN; SELECT ... FROM users; COMMIT` in a loop for `seconds`, its connection held throughout.

    venv/bin/python -m bench.pooling [--per-service 60] [--seconds 5]     # prints the figure's rows
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import ROOT
from components.scripts import INTERPRETER, load
from dbops.names import PASSWORD_LOGIN_ROLES, PASSWORD_LOGINS, POOLER_ROLE, POOLER_SCHEMA, READER, SERVICES
from dbops.release import release

LABEL = "8. 240 clients (4 services x 60), max_connections = 100"
DATABASE = "gaia_dev"


@dataclass
class Phase:
    clients: int
    connected: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(names: tuple[str, ...], env: dict[str, str]) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    done = subprocess.run([*INTERPRETER, load(*names)], env={**base, **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=180, check=False)
    if done.returncode:
        raise RuntimeError(f"{names[-1]} failed: {done.stderr.strip().splitlines()[-1:]}")


def phase(urls: dict[str, str], per_service: int, seconds: float) -> Phase:
    result = Phase(clients=per_service * len(urls))
    lock = threading.Lock()
    ready = threading.Barrier(result.clients + 1)
    stop = threading.Event()

    def client(url: str) -> None:
        conn = None
        try:
            conn = psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=5)
            with lock:
                result.connected += 1
        except psycopg.OperationalError as exc:
            text = str(exc)
            reason = ("too many clients" if "too many clients" in text else
                      "slots reserved for superusers" if "remaining connection slots" in text else
                      text.strip().splitlines()[-1])
            with lock:
                result.errors[reason] += 1
        ready.wait()
        if conn is None:
            return
        count = 0
        try:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute("SELECT count(*) FROM users WHERE email LIKE 'a%'").fetchone()
                count += 1
        except psycopg.Error as exc:
            with lock:
                result.errors[f"during the run: {type(exc).__name__}"] += 1
        finally:
            conn.close()
            with lock:
                result.transactions += count

    threads = [threading.Thread(target=client, args=(url,), daemon=True)
               for url in urls.values() for _ in range(per_service)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    result.seconds = time.monotonic() - started
    return result


def measure(per_service: int = 60, seconds: float = 5.0) -> tuple[Phase, Phase]:
    base = Path(tempfile.mkdtemp(prefix="gaia-pooling-"))
    base.chmod(0o755)  # the server user (postgres, when run as root) must reach the data directory
    data = base / "data"
    port, pooler_port = _free_port(), _free_port()  # loopback only
    env = {"GAIA_DATA_DIR": str(data), "GAIA_PORT": str(port), "GAIA_DATABASE": DATABASE,
           "GAIA_ADMIN_USER": "gaia_admin", "GAIA_ADMIN_PASSWORD": secrets.token_hex(16)}
    pooler_env = {"GAIA_DATA_DIR": str(data), "GAIA_PORT": str(port), "GAIA_DATABASE": DATABASE,
                  "GAIA_POOLER_PORT": str(pooler_port), "GAIA_POOLER_ROLE": POOLER_ROLE,
                  "GAIA_POOLER_SCHEMA": POOLER_SCHEMA,
                  "GAIA_POOLER_LOGINS": " ".join(PASSWORD_LOGIN_ROLES[login] for login in PASSWORD_LOGINS
                                                 if login != READER)}
    try:
        _script(("local/lib.sh", "local/create.sh"), env)
        _script(("local/lib.sh", "local/pooler.sh"), pooler_env)
        ca = data / "tls" / "ca.crt"
        tls = f"sslmode=verify-full&sslrootcert={ca}"
        passwords = {login: secrets.token_hex(16) for login in PASSWORD_LOGINS}
        release(f"postgresql://gaia_admin:{env['GAIA_ADMIN_PASSWORD']}@127.0.0.1:{port}/{DATABASE}?{tls}",
                environment="dev", admin_email="admin@dev.gaia.com", role_passwords=passwords, wait_seconds=30)

        def urls(at: int) -> dict[str, str]:
            return {s: f"postgresql://gaia_{s}:{passwords[s]}@127.0.0.1:{at}/{DATABASE}?{tls}" for s in SERVICES}

        direct = phase(urls(port), per_service, seconds)
        pooled = phase(urls(pooler_port), per_service, seconds)
        return direct, pooled
    finally:
        for names in (("local/lib.sh", "local/pooler-stop.sh"), ("local/lib.sh", "local/delete.sh")):
            try:
                _script(names, {"GAIA_DATA_DIR": str(data)})
            except RuntimeError:
                pass
        shutil.rmtree(base, ignore_errors=True)


def rows(direct: Phase, pooled: Phase) -> str:
    def failed(p: Phase) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in p.errors.most_common()) or "none"
        return f"{p.clients - p.connected} ({reasons})"

    lines = [
        f"| {LABEL} | through PgBouncer (transaction pooling) | direct to the primary | goal | met |",
        "|---|---|---|---|---|",
        f"| clients connected / failed | **{pooled.connected} / {failed(pooled)}** | {direct.connected} / "
        f"{failed(direct)} | all {pooled.clients} connect | {'yes' if pooled.connected == pooled.clients else 'no'} |",
        f"| transactions/s (every connected client, {pooled.seconds:.0f} s) | {pooled.per_second:,.0f} "
        f"({pooled.connected} clients) | {direct.per_second:,.0f} ({direct.connected} clients) | | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pooling")
    parser.add_argument("--per-service", type=int, default=60, help="clients per service (4 services)")
    parser.add_argument("--seconds", type=float, default=5.0, help="transaction loop per phase")
    args = parser.parse_args(argv)
    direct, pooled = measure(args.per_service, args.seconds)
    print(rows(direct, pooled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
