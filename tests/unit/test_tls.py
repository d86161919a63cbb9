"""Verified TLS under the mock engine (issue 15, docs/tls.md): for every stack and provider, the sslmode (and
sslrootcert / hostaddr) each URL carries, the `caCertificate` output, what the release connects with, and the
declarations behind them (the local CA, the RDS CA fetch, Cloud SQL's pinned server CA mode). No database here: the
local stack's verification against real servers is tests/e2e/test_local_tls.py, the RDS script's
tests/e2e/test_aws_ca_bundle.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from program import ROOT, Evaluation, evaluate, fake_pem, provider_config, stack_config

from components.tls import CLOUDSQL_SERVER_CA_MODE, RDS_CA_KINDS, pem_certificates, rds_ca_common_name
from dbops.tls import needs_root_certificate, root_certificate
from dbops.urls import parse_url

RELEASE = "pulumi-python:dynamic/gaia:Release"
# provider -> the sslmode of every URL it hands out; why it is not verify-full is in docs/tls.md.
SSLMODE = {"local": "verify-full", "aws": "verify-full", "gcp": "verify-ca", "fly": "disable"}
STACKS = [("local", "local"), *[(env, p) for env in ("dev", "staging", "prod") for p in ("fly", "aws", "gcp")]]


def program(stack: str, provider: str, preview: bool = False, **extra: Any) -> Evaluation:
    # No tunnel unless a test names one (a stack file may set releaseUrl for its CI deploy).
    extra.setdefault("releaseUrl", None)
    if provider == "local":
        config = stack_config("local", {f"gaia-db:{key}": value for key, value in extra.items()})
    else:
        config = provider_config(stack, provider, **extra)
    return evaluate(stack, config, preview=preview)


def every_url(ev: Evaluation) -> list[str]:
    outputs = ev.outputs
    return [outputs["databaseUrl"], *outputs["serviceUrls"].values(), *outputs["readerUrls"],
            *[url for urls in outputs["serviceReaderUrls"].values() for url in urls]]


@pytest.mark.parametrize(("stack", "provider"), STACKS)
def test_every_url_carries_the_providers_strongest_sslmode(stack: str, provider: str) -> None:
    ev = program(stack, provider, readReplicas=1)
    urls = every_url(ev)
    assert len(urls) == 10  # admin, four services, the reader and four service readers on the replica
    for url in urls:
        parsed = parse_url(url)
        query = dict(parsed.query)
        assert parsed.sslmode == SSLMODE[provider], url
        assert "hostaddr" not in query
        if provider == "local":  # the CA file on this machine, which every local client can read
            assert query["sslrootcert"] == os.path.join(ROOT, ".gaia", "local", "tls", "ca.crt")
        else:  # a service runs elsewhere: it points libpq at its own copy of caCertificate
            assert "sslrootcert" not in query
    if provider == "gcp":  # the socket form carries no sslmode: libpq ignores it on a Unix socket
        assert "sslmode" not in ev.outputs["databaseSocketUrl"]


@pytest.mark.parametrize("preview", [False, True], ids=["update", "preview"])
@pytest.mark.parametrize(("stack", "provider"), STACKS)
def test_ca_certificate_is_a_plain_pem_output_and_what_the_release_verifies_with(
    stack: str, provider: str, preview: bool
) -> None:
    ev = program(stack, provider, preview, readReplicas=1)
    assert "caCertificate" in ev.outputs and "caCertificate" not in ev.secret_outputs
    release = ev.one(RELEASE)
    assert "caCertificate" not in release.secret_inputs  # public: shown in previews, never [secret]
    assert release.inputs["connectionUrl"] == ev.outputs["databaseUrl"]
    if preview and provider in ("aws", "gcp", "local"):
        return  # computed by the cluster at `up` (the RDS fetch, the instances' CAs, create.sh's stdout)
    ca = ev.outputs["caCertificate"]
    assert release.inputs["caCertificate"] == ca
    expected = {
        "local": fake_pem("local"),  # create.sh's stdout (tests/program.py FakeCloud)
        "aws": fake_pem("rds"),  # ca-bundle.sh's stdout
        "gcp": fake_pem(f"cloudsql gaia-{stack}") + fake_pem(f"cloudsql gaia-{stack}-replica-1"),
        "fly": "",  # postgres-flex serves no TLS (docs/fly.md)
    }[provider]
    assert ca == expected and pem_certificates(ca) == ca


@pytest.mark.parametrize("env", ["dev", "prod"])
@pytest.mark.parametrize("identifier", sorted(RDS_CA_KINDS))
def test_aws_fetches_the_pinned_identifiers_ca_after_the_primary_and_the_release_waits_for_it(
    env: str, identifier: str
) -> None:
    ev = program(env, "aws", aws={"caCertIdentifier": identifier})
    primary = ev.one("aws:rds/instance:Instance", "-primary")
    assert primary.inputs["caCertIdentifier"] == identifier
    fetch = ev.one("command:local:Command", "-ca-bundle")
    environment = fetch.inputs["environment"]
    assert environment["GAIA_RDS_ENDPOINT"] == f"gaia-{env}.c0ffee.us-west-2.rds.amazonaws.com"
    assert environment["GAIA_RDS_CA_IDENTIFIER"] == identifier
    assert environment["GAIA_RDS_CA_KIND"] == RDS_CA_KINDS[identifier]
    assert environment["GAIA_RDS_TRUSTSTORE"] == "https://truststore.pki.rds.amazonaws.com"
    assert fetch.inputs["update"] == fetch.inputs["create"] and "delete" not in fetch.inputs
    assert not fetch.inputs.get("triggers") and fetch.protect is False  # re-fetched in place, never "replaced"
    assert primary.urn in fetch.dependencies and fetch.urn in ev.one(RELEASE).dependencies
    assert rds_ca_common_name(identifier, "us-west-2") == f"Amazon RDS us-west-2 Root CA {RDS_CA_KINDS[identifier]} G1"
    assert not [r for r in ev.resources if r.type == "command:local:Command" and r is not fetch]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_cloudsql_pins_the_per_instance_ca_on_the_primary_and_every_replica(env: str) -> None:
    ev = program(env, "gcp", readReplicas=2)
    instances = ev.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    assert len(instances) == 3
    for instance in instances:
        ip = instance.inputs["settings"]["ipConfiguration"]
        assert (ip["sslMode"], ip["serverCaMode"]) == ("ENCRYPTED_ONLY", CLOUDSQL_SERVER_CA_MODE)
    assert CLOUDSQL_SERVER_CA_MODE == "GOOGLE_MANAGED_INTERNAL_CA"
    assert ev.outputs["caCertificate"].count("BEGIN CERTIFICATE") == 3


TUNNELS = [
    # (provider, releaseUrl, host the release names, port, sslmode, hostaddr)
    ("aws", "postgresql://127.0.0.1:15432", "gaia-dev.c0ffee.us-west-2.rds.amazonaws.com", 15432, "verify-full",
     "127.0.0.1"),
    ("aws", "postgresql://[::1]:15432", "gaia-dev.c0ffee.us-west-2.rds.amazonaws.com", 15432, "verify-full", "::1"),
    # A tunnel named by a host name is where the socket goes; the certificate cannot carry that name.
    ("aws", "postgresql://localhost:15432", "localhost", 15432, "verify-ca", None),
    ("aws", "postgresql://127.0.0.1:15432?sslmode=require", "gaia-dev.c0ffee.us-west-2.rds.amazonaws.com", 15432,
     "require", "127.0.0.1"),
    # The Auth Proxy's listener is plaintext; the proxy verifies the instance (docs/tls.md).
    ("gcp", "postgresql://127.0.0.1:5432?sslmode=disable", "34.0.0.10", 5432, "disable", "127.0.0.1"),
    ("gcp", "postgresql://127.0.0.1:15432", "34.0.0.10", 15432, "verify-ca", "127.0.0.1"),
    ("fly", "postgresql://127.0.0.1:15432?sslmode=disable", "gaia-db-dev.flycast", 15432, "disable", "127.0.0.1"),
]


@pytest.mark.parametrize(("provider", "release_url", "host", "port", "sslmode", "hostaddr"), TUNNELS)
def test_a_tunnel_keeps_the_real_host_name_for_verification_and_takes_the_socket(
    provider: str, release_url: str, host: str, port: int, sslmode: str, hostaddr: str | None
) -> None:
    ev = program("dev", provider, releaseUrl=release_url)
    url = parse_url(ev.one(RELEASE).inputs["connectionUrl"])
    assert (url.host, url.port, url.sslmode, dict(url.query).get("hostaddr")) == (host, port, sslmode, hostaddr)
    assert parse_url(ev.outputs["databaseUrl"]).sslmode == SSLMODE[provider]  # the outputs never see the tunnel


# --- the pieces, without an engine ---------------------------------------------------------------------------

def test_pem_certificates_keeps_each_certificate_once_and_nothing_else() -> None:
    a, b = fake_pem("a"), fake_pem("b")
    assert pem_certificates(f"progress line\n{a}\n\n{b}{a}trailer", None, b) == a + b
    assert pem_certificates("", None) == ""
    assert pem_certificates(a.replace("\n", "\r\n")) == a


def test_root_certificate_writes_the_ca_only_where_the_url_verifies_without_one(tmp_path: Path) -> None:
    pem = fake_pem("ca")
    plain = "postgresql://u:p@db.example.com:5432/d?sslmode=verify-full"
    assert needs_root_certificate(plain)
    with root_certificate(plain, pem) as url:
        path = dict(parse_url(url).query)["sslrootcert"]
        assert Path(path).read_text() == pem and Path(path).stat().st_mode & 0o077 == 0
        assert url.startswith(plain + "&sslrootcert=")
    assert not Path(path).exists()
    pinned = plain.replace("verify-full", "verify-ca")  # Cloud SQL: its per-instance CA, no host name to match
    with root_certificate(pinned, pem) as url:
        assert Path(dict(parse_url(url).query)["sslrootcert"]).read_text() == pem
    for kept in (plain + "&sslrootcert=system", plain.replace("verify-full", "require"),
                 plain.replace("verify-full", "disable")):
        assert not needs_root_certificate(kept)
        with root_certificate(kept, pem) as url:
            assert url == kept
    with root_certificate(plain, "") as url:  # no CA to give (Fly): libpq's own default, ~/.postgresql/root.crt
        assert url == plain
