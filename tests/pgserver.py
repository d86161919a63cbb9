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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "test-superuser-password"
SERVER_USER = "postgres"  # who runs the server when we are root


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


def free_port(count: int = 1) -> int:
    """A port P such that P .. P+count-1 are all free on 127.0.0.1 (a server and its replicas on the next ports)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + count > 65536:
            continue
        try:
            for p in range(port + 1, port + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no run of {count} free ports on 127.0.0.1")


def as_server_user(cmd: Sequence[str]) -> list[str]:
    """`cmd` as the server user: through `runuser` when we are root, as is otherwise."""
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if os.geteuid() == 0 else list(cmd)




def run_as_server_user(*cmd: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd` as the server user; raises CalledProcessError (output captured) when it fails."""
    return subprocess.run(as_server_user(cmd), check=True, capture_output=True, text=True,
                          env=None if env is None else dict(env))


def pg_ctl(data_dir: Path, *args: str, log_file: Path | None = None) -> None:
    """`pg_ctl -D data_dir [-l log_file] args...` as the server user, e.g. `pg_ctl(data, "-w", "start", log_file=log)`
    or `pg_ctl(data, "-m", "fast", "-w", "stop")`."""
    logging = ["-l", str(log_file)] if log_file is not None else []
    run_as_server_user(str(server_bindir() / "pg_ctl"), "-D", str(data_dir), *logging, *args)


def server_tmpdir(prefix: str, *, owned: bool = True) -> Path:
    """A fresh temp directory for the server user (`postgres` when we are root).

    owned=True: the server user owns it, mode 0700, so a cluster's data can live right in it (PgServer).
    owned=False: we own it, mode 0711, so the server user can only traverse it to a directory made under it for
    that user (the local stack's scripts make and hand over their data directory themselves).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owned:
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SERVER_USER)
            os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(0o700)
    else:
        path.chmod(0o711)
    return path


@dataclass
class PgServer:
    """One PostgreSQL cluster; `start()` initialises it, `stop()` removes it.

    A `start()` that fails stops what it started and removes its directory before it raises, so it leaks nothing.
    """

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

    def start(self) -> PgServer:
        bindir = server_bindir()
        requested_port = self.port
        self.base = server_tmpdir("gaia-pg-")
        try:
            self._initialise(bindir)
            self.start_server()
        except BaseException:
            self.stop()  # a half-started server stops, and its directory (with the password file) goes
            self.port = requested_port
            raise
        return self

    def _initialise(self, bindir: Path) -> None:
        assert self.base is not None
        pwfile = self.base / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(SERVER_USER)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        run_as_server_user(
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

    def ctl(self, *args: str) -> None:
        """`pg_ctl` on this cluster's data directory (its log file set), as the server user: `ctl("-w", "start")`."""
        pg_ctl(self.data_dir, *args, log_file=self.log_file)

    def start_server(self) -> None:
        self.ctl("-w", "start")

    def stop_server(self) -> None:
        self.ctl("-m", "fast", "-w", "stop")

    def stop(self) -> None:
        if self.base is None:
            return
        try:
            self.stop_server()
        except (subprocess.CalledProcessError, OSError):
            pass  # not running (or never started)
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


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Whether `predicate()` became true within `timeout` seconds (polled every `interval`; once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
