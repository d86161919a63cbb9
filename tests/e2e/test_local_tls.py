"""Verified TLS on the local stack (issue 15): every URL the stack hands out is `sslmode=verify-full` against the
cluster's own CA (`<dataDir>/tls/ca.crt`, exported as `caCertificate`), and a server that is not the cluster's — one
with another certificate, or the right certificate under a wrong host name — is refused: by libpq, by the release (the
CLI and the dynamic provider) and by the ops commands, which all take the same URL.

The impostor is a real PostgreSQL on 127.0.0.1 with a certificate for the same names (localhost, 127.0.0.1) from
another CA, holding the same admin login: `sslmode=require` would hand it the password; `verify-full` never does.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_runner import run_dbops
from pgserver import SERVER_USER, PgServer, free_port, server_tmpdir
from test_local_stack import LocalStack, kill_postgres_under

from components.local import ADMIN_USER
from components.release import ReleaseFailed, ReleaseProvider
from components.tls import pem_certificates
from dbops.errors import DbopsError
from dbops.health import check
from dbops.names import SERVICES
from dbops.release import release
from dbops.urls import parse_url, with_parameters

pytestmark = pytest.mark.xdist_group("local_tls")  # one worker runs this file's module-scoped servers


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """A one-replica local stack, applied by its scripts and declared again, so the outputs carry its real CA."""
    base = server_tmpdir("gaia tls-", owned=False)
    local = LocalStack(base=base, port=free_port(2), password=secrets.token_urlsafe(18))
    try:
        local.apply(local.declare(replicas=1))
        local.declare(replicas=1)
        yield local
    finally:
        kill_postgres_under(base)
        shutil.rmtree(base, ignore_errors=True)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def other_ca(directory: Path) -> Path:
    """A CA of its own and a server certificate it signs for exactly the local stack's names."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
            "-subj", "/CN=impostor CA", "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"))
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=localhost", "-keyout", str(directory / "server.key"), "-out", str(directory / "server.csr"))
    (directory / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(directory / "ca.crt"),
            "-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "30",
            "-extfile", str(directory / "ext"), "-out", str(directory / "server.crt"))
    if os.geteuid() == 0:
        server = pwd.getpwnam(SERVER_USER)
        for path in directory.iterdir():
            os.chown(path, server.pw_uid, server.pw_gid)
    (directory / "server.key").chmod(0o600)
    return directory / "ca.crt"


@pytest.fixture(scope="module")
def impostor(stack: LocalStack) -> Iterator[tuple[PgServer, Path]]:
    """(a server answering on 127.0.0.1 with another CA's certificate and the stack's admin login, that CA)."""
    tls = server_tmpdir("gaia-impostor-tls-")
    ca = other_ca(tls)
    server = PgServer(extra_conf={"ssl": "on", "ssl_cert_file": f"'{tls}/server.crt'",
                                  "ssl_key_file": f"'{tls}/server.key'"}).start()
    try:
        escaped = stack.password.replace("'", "''")
        server.execute(f"CREATE ROLE {ADMIN_USER} LOGIN CREATEROLE CREATEDB PASSWORD '{escaped}'")
        server.execute(f"CREATE DATABASE gaia_dev OWNER {ADMIN_USER}")
        yield server, ca
    finally:
        server.stop()
        shutil.rmtree(tls, ignore_errors=True)


def on_port(url: str, port: int) -> str:
    """`url` sent to another server on 127.0.0.1: everything else, the CA to verify against included, unchanged."""
    parsed = parse_url(url)
    return url.replace(f"@{parsed.host}:{parsed.port}/", f"@127.0.0.1:{port}/", 1)


def encrypted_only(url: str) -> str:
    """`url` with sslmode=require and no CA (libpq treats require with a CA file as verify-ca)."""
    return with_parameters(url.split("&sslrootcert=")[0], sslmode="require")


def ssl_in_use(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return bool(row and row[0])


def test_every_url_verifies_the_server_against_the_clusters_own_ca(stack: LocalStack) -> None:
    outputs = stack.evaluation.outputs
    ca = stack.ca_file.read_text()
    # The CA the URLs name is what the stack exports (plain: it is public), and what the primary's script printed.
    assert outputs["caCertificate"] == ca == pem_certificates(ca)
    assert "caCertificate" not in stack.evaluation.secret_outputs
    primary_runs = [run for run in stack.runner.runs if run.resource.endswith("-primary")]
    assert pem_certificates(primary_runs[-1].stdout) == ca
    # The server certificate is the CA's, for the names the nodes listen on, and its key stays with the server.
    tls = stack.data_dir / "tls"
    subprocess.run(["openssl", "verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt")], check=True,
                   capture_output=True)
    assert (tls / "ca.key").stat().st_mode & 0o077 == 0 and (tls / "server.key").stat().st_mode & 0o077 == 0

    urls = [outputs["databaseUrl"], *outputs["serviceUrls"].values(), *outputs["readerUrls"],
            *[url for urls in outputs["serviceReaderUrls"].values() for url in urls]]
    assert len(urls) == 1 + len(SERVICES) + 1 + len(SERVICES)
    for url in urls:
        parsed = parse_url(url)
        assert (parsed.sslmode, dict(parsed.query)["sslrootcert"]) == ("verify-full", str(stack.ca_file))
    release = stack.evaluation.one("pulumi-python:dynamic/gaia:Release")
    assert release.inputs["connectionUrl"] == outputs["databaseUrl"] and release.inputs["caCertificate"] == ca
    with psycopg.connect(outputs["databaseUrl"], autocommit=True) as conn:  # the primary, and the replica's URL
        assert ssl_in_use(conn)
    health = check(outputs["databaseUrl"].replace(f":{stack.port}/", f":{stack.port + 1}/"), timeout=10)
    assert health["status"] == "healthy", health  # the replica serves the same CA's certificate


def test_a_server_with_another_certificate_is_refused(stack: LocalStack, impostor: tuple[PgServer, Path]) -> None:
    server, _ = impostor
    url = on_port(stack.evaluation.outputs["databaseUrl"], server.port)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(url, connect_timeout=5).close()
    # What verify-full prevents: with require the same URL logs in to the impostor, password and all.
    with psycopg.connect(encrypted_only(url), connect_timeout=5) as conn:
        assert ssl_in_use(conn)


def test_a_wrong_host_name_is_refused_even_with_the_right_ca(stack: LocalStack) -> None:
    url = stack.evaluation.outputs["databaseUrl"]
    # libpq `hostaddr`: the socket goes to 127.0.0.1 while the name checked against the certificate is the host
    # (docs/tls.md, "Tunnels"). localhost is in the certificate; another name is not.
    renamed = url.replace("@127.0.0.1:", "@localhost:", 1)
    with psycopg.connect(with_parameters(renamed, hostaddr="127.0.0.1"), connect_timeout=5) as conn:
        assert ssl_in_use(conn)
    wrong = url.replace("@127.0.0.1:", "@db.gaia.invalid:", 1)
    with pytest.raises(psycopg.OperationalError, match=r'does not match host name "db\.gaia\.invalid"'):
        psycopg.connect(with_parameters(wrong, hostaddr="127.0.0.1"), connect_timeout=5).close()


def test_the_release_refuses_the_impostor_and_names_the_certificate(
    stack: LocalStack, impostor: tuple[PgServer, Path]
) -> None:
    server, _ = impostor
    url = on_port(stack.evaluation.outputs["databaseUrl"], server.port)
    with pytest.raises(DbopsError, match=r"was not verified \(.*certificate verify failed.*caCertificate") as raised:
        release(url, environment="dev", admin_email="admin@dev.gaia.com", wait_seconds=5)
    assert stack.password not in str(raised.value)
    # The CLI the runbook uses, and an ops command, with the same URL: one sentence, non-zero, nothing done.
    done = run_dbops("release", "--environment", "dev", "--admin-email", "admin@dev.gaia.com", "--wait", "5",
                     env={"DATABASE_URL": url})
    assert done.returncode != 0 and done.stdout == ""
    assert "certificate verify failed" in done.stderr and stack.password not in done.stderr
    health = run_dbops("health", env={"DATABASE_URL": url})
    assert health.returncode != 0 and "certificate verify failed" in health.stdout + health.stderr
    with psycopg.connect(encrypted_only(url), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'alembic_version'").fetchone() == (0,)


def test_the_dynamic_provider_verifies_against_the_ca_it_is_given(
    stack: LocalStack, impostor: tuple[PgServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cloud URL names no sslrootcert (a service supplies its own copy): the provider verifies against the
    stack's `caCertificate`, written to a private file only while the release runs."""
    # A failed release sets sys.tracebacklimit = 0 for the provider process; here it is this worker's, and the
    # mock engine's later evaluations need stack traces: restored (removed) after the test.
    monkeypatch.setattr(sys, "tracebacklimit", 1000, raising=False)
    _, impostor_ca = impostor
    release_inputs = stack.evaluation.one("pulumi-python:dynamic/gaia:Release").inputs
    url = with_parameters(release_inputs["connectionUrl"].split("&sslrootcert=")[0])
    assert "sslrootcert" not in url and "sslmode=verify-full" in url
    props = dict(release_inputs, connectionUrl=url, waitSeconds=10)
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("gaia-db-ca-*"))
    with pytest.raises(ReleaseFailed, match="certificate verify failed"):
        ReleaseProvider().create(dict(props, caCertificate=impostor_ca.read_text()))
    outputs = ReleaseProvider().create(props).outs  # the stack's own CA
    assert outputs["revision"]
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("gaia-db-ca-*")) == before  # nothing left behind


def test_a_reissued_certificate_is_served_without_a_new_ca(stack: LocalStack) -> None:
    """A server certificate that is not the CA's (a cluster from before the CA, or one near expiry) is reissued on
    the next deploy and every node reloads it; the CA, and so every service's sslrootcert, stays."""
    tls = stack.data_dir / "tls"
    ca_before = (tls / "ca.crt").read_bytes()
    other = server_tmpdir("gaia-other-tls-")
    try:
        other_ca(other)
        for name in ("server.crt", "server.key"):
            shutil.copy2(other / name, tls / name)
    finally:
        shutil.rmtree(other, ignore_errors=True)
    runs = stack.create_again()
    assert "making the server certificate" in runs[0].stderr
    assert (tls / "ca.crt").read_bytes() == ca_before
    for port in (stack.port, stack.port + 1):
        with stack.connect(port) as conn:  # verify-full against the unchanged CA
            assert ssl_in_use(conn)
    assert json.loads(json.dumps(stack.evaluation.outputs["caCertificate"])) == ca_before.decode()
