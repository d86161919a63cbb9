"""The RDS CA script (components/scripts/aws/ca-bundle.sh) run for real, as the aws stack declares it, against a
recording `curl` on PATH that serves a regional bundle made here with openssl: it keeps exactly the pinned
identifier's regional root, and refuses what is not one.

Real bundles hold one self-signed root per region and CA ("Amazon RDS <region> Root CA RSA2048 G1", …, and the
older "Amazon RDS <region> 2019 CA"); the made-up one has the same names, so the selection is what is tested.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from program import Declared, evaluate, provider_config

from components.tls import RDS_TRUSTSTORE, pem_certificates

ENDPOINT = "gaia-dev.c0ffee.us-west-2.rds.amazonaws.com"
CURL = """#!/bin/bash
printf '%s\\n' "$*" >>"$FAKE_CURL_LOG"
url=${@: -1}
file=$FAKE_TRUSTSTORE/${url#https://truststore.pki.rds.amazonaws.com/}
[[ -f $file ]] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
cat "$file"
"""


def make_cert(directory: Path, name: str, issuer: tuple[Path, Path] | None = None) -> Path:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subject = f"/C=US/ST=WA/L=Seattle/O=Amazon Web Services, Inc./OU=Amazon RDS/CN={name}"
    common = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
              "-keyout", str(key)]
    if issuer is None:
        subprocess.run(["openssl", "req", "-x509", *common, "-days", "30", "-out", str(cert)], check=True,
                       capture_output=True)
    else:
        csr = directory / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", *common, "-out", str(csr)], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(issuer[1]), "-CAkey", str(issuer[0]),
                        "-CAcreateserial", "-days", "30", "-out", str(cert)], check=True, capture_output=True)
    return cert


@pytest.fixture(scope="module")
def truststore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/<region>/<region>-bundle.pem for us-west-2 and eu-west-1, each with its region's CAs."""
    root = tmp_path_factory.mktemp("truststore")
    certs = tmp_path_factory.mktemp("certs")
    for region in ("us-west-2", "eu-west-1"):
        names = [f"Amazon RDS {region} Root CA {kind} G1" for kind in ("RSA2048", "RSA4096", "ECC384")]
        pems = [make_cert(certs, name).read_text() for name in [f"Amazon RDS {region} 2019 CA", *names]]
        (root / region).mkdir()
        (root / region / f"{region}-bundle.pem").write_text("\n".join(pems))
    return root


def ca_command(identifier: str = "rds-ca-rsa2048-g1") -> Declared:
    ev = evaluate("dev", provider_config("dev", "aws", aws={"caCertIdentifier": identifier}))
    return ev.one("command:local:Command", "-ca-bundle")


def run(command: Declared, truststore: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "curl").write_text(CURL)
    (bin_dir / "curl").chmod(0o755)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_TRUSTSTORE": str(truststore),
                   "FAKE_CURL_LOG": str(tmp_path / "curl.log"), **command.inputs["environment"], **env}
    return subprocess.run([*command.inputs["interpreter"], command.inputs["create"]], env=environment,
                          capture_output=True, text=True, timeout=60, check=False)


def subjects(pem: str, tmp_path: Path) -> list[str]:
    names = []
    for index, block in enumerate(pem_certificates(pem).split("-----END CERTIFICATE-----\n")[:-1]):
        path = tmp_path / f"out-{index}.pem"
        path.write_text(block + "-----END CERTIFICATE-----\n")
        out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-subject", "-nameopt", "multiline"],
                             check=True, capture_output=True, text=True).stdout
        names += [line.split("=", 1)[1].strip() for line in out.splitlines() if "commonName" in line]
    return names


@pytest.mark.parametrize(("identifier", "kind"), [("rds-ca-rsa2048-g1", "RSA2048"), ("rds-ca-rsa4096-g1", "RSA4096"),
                                                  ("rds-ca-ecc384-g1", "ECC384")])
def test_keeps_only_the_pinned_identifiers_root_of_the_instances_region(
    truststore: Path, tmp_path: Path, identifier: str, kind: str
) -> None:
    command = ca_command(identifier)
    assert command.inputs["environment"]["GAIA_RDS_CA_IDENTIFIER"] == identifier
    done = run(command, truststore, tmp_path, GAIA_RDS_ENDPOINT=ENDPOINT)
    assert done.returncode == 0, done.stderr
    assert subjects(done.stdout, tmp_path) == [f"Amazon RDS us-west-2 Root CA {kind} G1"]
    assert pem_certificates(done.stdout) == done.stdout  # stdout is the PEM and nothing else
    assert "SHA256" not in done.stdout and f"trusting 'Amazon RDS us-west-2 Root CA {kind} G1' (" in done.stderr
    (call,) = (tmp_path / "curl.log").read_text().splitlines()
    assert call.endswith(f"{RDS_TRUSTSTORE}/us-west-2/us-west-2-bundle.pem")
    assert "--proto =https" in call and "--fail" in call and "--tlsv1.2" in call


def test_the_region_is_the_endpoints(truststore: Path, tmp_path: Path) -> None:
    done = run(ca_command(), truststore, tmp_path, GAIA_RDS_ENDPOINT="gaia-dev.c0ffee.eu-west-1.rds.amazonaws.com")
    assert done.returncode == 0, done.stderr
    assert subjects(done.stdout, tmp_path) == ["Amazon RDS eu-west-1 Root CA RSA2048 G1"]


@pytest.mark.parametrize(("endpoint", "message"), [
    ("gaia-dev.c0ffee.ap-south-2.rds.amazonaws.com", "could not fetch"),  # no bundle served for that region
    ("gaia-dev.c0ffee.cn-north-1.rds.amazonaws.com.cn", "is not <instance>.<id>.<region>.rds.amazonaws.com"),
    ("127.0.0.1", "is not <instance>.<id>.<region>.rds.amazonaws.com"),
])
def test_refuses_what_it_cannot_fetch(truststore: Path, tmp_path: Path, endpoint: str, message: str) -> None:
    done = run(ca_command(), truststore, tmp_path, GAIA_RDS_ENDPOINT=endpoint)
    assert done.returncode != 0 and done.stdout == ""
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("[gaia-db aws] error:")]
    assert message in line


def test_refuses_a_bundle_without_the_root_or_with_a_signed_impostor(truststore: Path, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    store = tmp_path / "store"
    (store / "us-west-2").mkdir(parents=True)
    bundle = store / "us-west-2" / "us-west-2-bundle.pem"
    bundle.write_text(make_cert(certs, "Amazon RDS us-west-2 2019 CA").read_text())
    done = run(ca_command(), store, tmp_path, GAIA_RDS_ENDPOINT=ENDPOINT)
    assert done.returncode != 0 and done.stdout == "" and "holds no certificate named" in done.stderr
    assert "gaia-db:aws.caCertIdentifier" in done.stderr
    # A certificate with the root's name that some other CA signed is not a root: refused, nothing printed.
    other = make_cert(certs, "some CA")
    bundle.write_text(make_cert(certs, "Amazon RDS us-west-2 Root CA RSA2048 G1",
                                issuer=(certs / "some CA.key", other)).read_text())
    done = run(ca_command(), store, tmp_path, GAIA_RDS_ENDPOINT=ENDPOINT)
    assert done.returncode != 0 and done.stdout == "" and "is not a self-signed root certificate" in done.stderr
