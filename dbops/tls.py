"""Verified TLS for dbops' own connections: the CA a stack exports (`caCertificate`) as libpq's `sslrootcert`.

libpq reads the CA from a file. Where the URL verifies the server (`verify-ca`, `verify-full`) and names no
`sslrootcert`, `root_certificate` writes the PEM to a private temporary file for the duration of a connection's use
and points the URL at it; a URL that names its own `sslrootcert` (the local stack's CA file, `system`) is kept.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from dbops.urls import split_url, with_parameters

VERIFYING = ("verify-ca", "verify-full")


def needs_root_certificate(url: str) -> bool:
    """Whether libpq verifies the server for `url` and the URL does not say against what."""
    _, query = split_url(url)
    return query.get("sslmode") in VERIFYING and "sslrootcert" not in query


@contextmanager
def root_certificate(url: str, pem: str | None) -> Iterator[str]:
    """`url` with `sslrootcert` pointing at a file holding `pem` while the block runs (see module docstring)."""
    if not pem or not needs_root_certificate(url):
        yield url
        return
    fd, path = tempfile.mkstemp(prefix="gaia-db-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(pem)
        yield with_parameters(url, sslrootcert=path)
    finally:
        os.unlink(path)
