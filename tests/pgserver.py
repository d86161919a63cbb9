"""A throwaway PostgreSQL server for tests and benchmarks.

PostgreSQL refuses to run as root, so when the tests run as root every server command runs as the
`postgres` user (`runuser`), with its data in a directory that user owns. Servers bind to 127.0.0.1
only, on a free port, with password (scram) authentication over TCP so wrong-password paths are real.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "test-superuser-password"


def server_bindir() -> Path:
    """The newest PostgreSQL server binaries on this machine."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: install the 'postgresql' package")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def make_owned_dir(prefix: str) -> Path:
    """A fresh temp directory the server user owns (mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o700)
    return path


@dataclass
class PgServer:
    """One PostgreSQL cluster; `start()` initialises it, `stop()` removes it."""

    extra_conf: dict[str, str] = field(default_factory=dict)
    port: int = 0
    base: Path | None = None

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    def url(self, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD, dbname: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *cmd: str) -> None:
        subprocess.run(_as_server_user(list(cmd)), check=True, capture_output=True, text=True)

    def start(self) -> PgServer:
        bindir = server_bindir()
        self.base = make_owned_dir("gaia-pg-")
        pwfile = self.base / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(
            str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
        )
        pwfile.unlink()
        self.port = self.port or free_port()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **self.extra_conf,
        }
        with open(self.data_dir / "postgresql.conf", "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        self.start_server()
        return self

    def start_server(self) -> None:
        bindir = server_bindir()
        self._run(str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "start")

    def stop_server(self) -> None:
        bindir = server_bindir()
        self._run(str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        if self.base is None:
            return
        try:
            self.stop_server()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.url(dbname=dbname), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, admin_password: str = "admin-password") -> tuple[str, str]:
        """A new database owned by a fresh non-superuser admin, like an RDS / Cloud SQL master user.

        Returns (database name, the admin's URL).
        """
        suffix = f"{time.time_ns() % 10**12}"
        admin, dbname = f"admin_{suffix}", f"db_{suffix}"
        self.execute(f"CREATE ROLE {admin} LOGIN CREATEROLE CREATEDB PASSWORD '{admin_password}'")
        self.execute(f"CREATE DATABASE {dbname} OWNER {admin}")
        return dbname, self.url(admin, admin_password, dbname)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
