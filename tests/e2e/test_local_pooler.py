"""The local stack's PgBouncer (issue 19), run by its own scripts against real servers.

`pooler.sh` puts PgBouncer (Debian's 1.18) in front of the primary: clients log in with SCRAM over TLS verified
against the cluster's CA (`poolerUrls`: sslmode=verify-full), PgBouncer fetches the login's verifier through one
SECURITY DEFINER function as the auth user, and reaches the primary over verify-full TLS too. The auth user's password
is the only plaintext, in a 0600 file under the cluster's directory; the delete stops PgBouncer.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from matrix import ALLOWED, insert_sample_rows, rights
from pgserver import free_port, server_tmpdir, wait_until
from test_local_stack import LocalStack, commands_in_order, kill_postgres_under, postgres_pids

from dbops.names import POOLER_ROLE, SERVICES
from dbops.release import release
from dbops.urls import parse_url

pytestmark = pytest.mark.xdist_group("local_pooler")  # one worker runs this file's module-scoped servers
POOLER = "gaia-db-local-pooler"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """A local stack without replicas, applied by its scripts, released, and declared again for its outputs."""
    base = server_tmpdir("gaia pooler-", owned=False)
    local = LocalStack(base=base, port=free_port(), password=secrets.token_urlsafe(18))
    try:
        local.apply(local.declare(replicas=0))
        # The release the deploy runs next (the release tests drive it through the provider process): the stack's
        # passwords, both logins of every service among them.
        inputs = local.evaluation.one("pulumi-python:dynamic/gaia:Release").inputs
        release(inputs["connectionUrl"], environment="dev", admin_email="admin@dev.gaia.com", wait_seconds=5,
                role_passwords=inputs["rolePasswords"])
        with local.connect() as conn:
            insert_sample_rows(conn)
        yield local
    finally:
        kill_postgres_under(base)
        shutil.rmtree(base, ignore_errors=True)


def pooled(url: str, **overrides: Any) -> psycopg.Connection[Any]:
    # Transaction pooling on PgBouncer 1.18: no server-side prepared statements (README, "Pooled connections").
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=5, **overrides)


def another_ca(directory: Path) -> Path:
    """A self-signed CA of its own, in `directory`: nothing of the cluster chains to it."""
    certificate = directory / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=another CA", "-keyout", str(directory / "other.key"),
                    "-out", str(certificate)], check=True, capture_output=True)
    return certificate


def test_pooler_urls_go_through_pgbouncer_with_verified_tls_and_each_service_has_its_own_rights(
        stack: LocalStack) -> None:
    outputs = stack.evaluation.outputs
    assert "poolerUrls" in stack.evaluation.secret_outputs
    assert set(outputs["poolerUrls"]) == set(SERVICES)
    for service in SERVICES:
        url, direct = outputs["poolerUrls"][service], outputs["serviceUrls"][service]
        assert url.endswith(f"@127.0.0.1:{stack.pooler_port}/gaia_dev?{stack.verified}")
        assert parse_url(url).user == parse_url(direct).user and parse_url(url).password == parse_url(direct).password
        with pooled(url) as conn:
            # current_user is the service's login on the server; the server connection PgBouncer made is TLS too;
            # and this is not the primary's own port (the client reached PgBouncer).
            user, server_ssl = conn.execute(
                "SELECT current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())").fetchone() or ()
            assert (user, server_ssl) == (f"gaia_{service}", True)
            assert conn.info.port == stack.pooler_port
            assert conn.pgconn.ssl_in_use
            assert rights(conn) == ALLOWED[service], service


def test_a_wrong_password_plaintext_or_the_wrong_ca_is_refused(stack: LocalStack, tmp_path: Path) -> None:
    url = stack.evaluation.outputs["poolerUrls"]["chat"]
    password = parse_url(url).password
    with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|SASL authentication failed"):
        pooled(url.replace(password, "not-" + password[4:], 1)).close()
    with pytest.raises(psycopg.OperationalError):  # no TLS, no login: PgBouncer requires it
        pooled(url.split("?")[0], sslmode="disable").close()
    with pytest.raises(psycopg.OperationalError):  # PgBouncer's certificate does not chain to another CA
        pooled(url, sslrootcert=str(another_ca(tmp_path))).close()


def test_the_admin_the_reader_and_the_auth_user_cannot_log_in_through_the_pooler(stack: LocalStack) -> None:
    auth_password = (stack.data_dir / "pooler" / "userlist.txt").read_text().split('"')[3]
    reader_password = stack.evaluation.one("pulumi-python:dynamic/gaia:Release").inputs["rolePasswords"]["reader"]
    for user, password in (("gaia_admin", stack.password), ("gaia_reader", reader_password),
                           (POOLER_ROLE, auth_password)):
        with stack.connect(user=user, password=password) as conn:  # each one's password is right (directly)
            assert conn.execute("SELECT current_user").fetchone() == (user,)
        with pytest.raises(psycopg.OperationalError):
            stack.connect(stack.pooler_port, user=user, password=password).close()


def test_the_auth_file_is_0600_and_holds_only_the_auth_user(stack: LocalStack) -> None:
    auth_file = stack.data_dir / "pooler" / "userlist.txt"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    lines = auth_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'"{POOLER_ROLE}" "')
    for name in ("pgbouncer.ini", "pg_hba.conf"):
        assert stat.S_IMODE((stack.data_dir / "pooler" / name).stat().st_mode) == 0o600
    # No service password is in any of the pooler's files or in its log.
    outputs = stack.evaluation.outputs
    files = [*(stack.data_dir / "pooler").iterdir(), stack.data_dir / "log" / "pgbouncer.log"]
    text = "".join(p.read_text(errors="replace") for p in files if p.is_file())
    for url in outputs["poolerUrls"].values():
        assert parse_url(url).password not in text
    assert stack.password not in text
    # The lookup function answers for the service logins only, and only its auth user may call it.
    with stack.connect() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM gaia_pooler.lookup('gaia_chat')")
    auth_password = lines[0].split('"')[3]
    with stack.connect(user=POOLER_ROLE, password=auth_password) as conn:
        found = conn.execute(
            "SELECT l, f.usename, f.passwd LIKE 'SCRAM-SHA-256$%%' FROM unnest(%s::text[]) WITH ORDINALITY AS u(l, n), "
            "gaia_pooler.lookup(l) AS f ORDER BY n",
            (["gaia_chat", "gaia_auth_alt", "gaia_admin", "gaia_reader", "postgres", POOLER_ROLE],)).fetchall()
        assert found == [("gaia_chat", "gaia_chat", True), ("gaia_auth_alt", "gaia_auth_alt", True),
                         ("gaia_admin", None, None), ("gaia_reader", None, None), ("postgres", None, None),
                         (POOLER_ROLE, None, None)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the auth user reads nothing else
            conn.execute("SELECT count(*) FROM users")


def test_running_create_again_leaves_pgbouncer_alone(stack: LocalStack) -> None:
    pid = (stack.data_dir / "pooler" / "pgbouncer.pid").read_text().split()[0]
    pooler = next(c for c in commands_in_order(stack.applied) if c.name == POOLER)
    run = stack.runner.run(pooler, "create")
    assert "PgBouncer already running" in run.stderr and "restarting" not in run.stderr
    assert "setting the password" not in run.stderr
    assert (stack.data_dir / "pooler" / "pgbouncer.pid").read_text().split()[0] == pid


def test_a_new_pooler_port_is_an_update_of_the_pooler_alone(stack: LocalStack) -> None:
    stack.pooler_port = free_port()
    steps = stack.apply(stack.declare(replicas=0))
    assert steps == {"gaia-db-local-primary": "same", "gaia-db-local-replicas": "same", POOLER: "update"}
    with pooled(stack.evaluation.outputs["poolerUrls"]["auth"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("gaia_auth",)


def test_pgbouncer_verifies_the_primary_it_hands_logins_to(stack: LocalStack, tmp_path: Path) -> None:
    """server_tls_sslmode = verify-full: with another CA where PgBouncer checks the primary's certificate, it makes no
    server connection, so no service login reaches a server that cannot prove it is the cluster's. Runs next to last:
    after a failed server login PgBouncer waits server_login_retry (15 s) before it tries the primary again."""
    url = stack.evaluation.outputs["poolerUrls"]["chat"]
    ca = stack.data_dir / "tls" / "ca.crt"
    real = tmp_path / "ca.crt"
    shutil.copy2(ca, real)  # the client keeps verifying PgBouncer itself with the cluster's CA
    other = another_ca(tmp_path)
    pid = int((stack.data_dir / "pooler" / "pgbouncer.pid").read_text().split()[0])

    def server_connection_refused() -> bool:
        stack.superuser_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'gaia_chat'")
        try:
            with pooled(url, sslrootcert=str(real)) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return True
        return False

    assert not server_connection_refused()
    try:
        ca.write_bytes(other.read_bytes())
        os.kill(pid, signal.SIGHUP)  # PgBouncer reloads its TLS settings for the next server connection
        assert wait_until(server_connection_refused, timeout=5)
    finally:
        ca.write_bytes(real.read_bytes())
        os.kill(pid, signal.SIGHUP)


def test_delete_stops_pgbouncer(stack: LocalStack) -> None:
    pooler = next(c for c in commands_in_order(stack.applied) if c.name == POOLER)
    pid = int((stack.data_dir / "pooler" / "pgbouncer.pid").read_text().split()[0])
    assert pid in postgres_pids(stack.data_dir)
    stack.runner.run(pooler, "delete")
    assert pid not in postgres_pids(stack.data_dir)
    assert not (stack.data_dir / "pooler").exists()
    with pytest.raises(psycopg.OperationalError):
        pooled(stack.evaluation.outputs["poolerUrls"]["chat"]).close()
    stack.destroy()  # the rest of the cluster: nothing of it is left running
    assert postgres_pids(stack.data_dir) == []
