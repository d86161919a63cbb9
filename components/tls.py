"""Verified TLS (docs/tls.md): which CA signs each provider's server certificates, as plain data.

Pure functions and constants, no resources: the provider components use them to fill the cluster contract's
`sslmode`, `sslrootcert` and `ca_certificate`.
"""

from __future__ import annotations

import re

# The RDS CA per pinned `ca_cert_identifier`: the regional root's common name, "Amazon RDS <region> Root CA <kind> G1"
# (AWS RDS User Guide, "Using SSL/TLS to encrypt a connection to a DB instance", Certificate authorities table).
RDS_CA_KINDS = {"rds-ca-rsa2048-g1": "RSA2048", "rds-ca-rsa4096-g1": "RSA4096", "rds-ca-ecc384-g1": "ECC384"}
# AWS's regional certificate bundles ("Certificate bundles for specific AWS Regions"): every RDS CA of that region;
# components/scripts/aws/ca-bundle.sh keeps the pinned identifier's root from it.
RDS_TRUSTSTORE = "https://truststore.pki.rds.amazonaws.com"
# Cloud SQL's per-instance CA: dedicated to one instance, so verify-ca already pins that instance; its server
# certificate has a CN and no subjectAltName, so verify-full cannot match a host (docs/tls.md).
CLOUDSQL_SERVER_CA_MODE = "GOOGLE_MANAGED_INTERNAL_CA"

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----")


def pem_certificates(*texts: str | None) -> str:
    """Every PEM certificate in `texts`, each once, in order, one after another: a CA bundle for `sslrootcert`.

    Anything around the certificates (a script's other output, blank lines) is left out; "" when there is none.
    """
    seen: dict[str, None] = {}
    for text in texts:
        for block in _PEM.findall(text or ""):
            seen["\n".join(line.strip() for line in block.strip().splitlines())] = None
    return "".join(f"{block}\n" for block in seen)


def rds_ca_common_name(identifier: str, region: str) -> str:
    """The common name of the regional root CA that signs an instance's certificate under `identifier`."""
    return f"Amazon RDS {region} Root CA {RDS_CA_KINDS[identifier]} G1"
