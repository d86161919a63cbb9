"""The small contract every provider component fulfils, so the rest of the program never asks which cloud it is on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypedDict

import pulumi

from components.settings import Settings


class HostPort(TypedDict):
    host: str
    port: int


class DatabaseCluster(pulumi.ComponentResource):
    """A PostgreSQL primary (plus read replicas) and its admin login.

    Subclasses name their component type in `TYPE` and, in `_declare`, declare their cloud's resources as children
    and set every attribute below. `release_dependencies` are the resources the post-deploy release must wait for
    (the primary, its replicas, and anything that makes the admin login valid).
    """

    TYPE: ClassVar[str]

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    database_name: pulumi.Output[str]
    admin_user: pulumi.Output[str]
    admin_password: pulumi.Output[str]  # secret
    readers: pulumi.Output[list[HostPort]]
    sslmode: str
    # Verified TLS (docs/tls.md): `sslrootcert` for the URLs, where the CA file is at a path every client of this
    # provider shares (local only; elsewhere a service points libpq at its copy of `ca_certificate`), and the PEM of
    # the CA(s) that sign the server certificates, exported as `caCertificate` ("" where the server has no TLS: Fly).
    sslrootcert: str | None = None
    ca_certificate: pulumi.Output[str]
    # issue 19: the connection pooler in front of the primary (PgBouncer locally, RDS Proxy on AWS) where the provider
    # has one, and the `sslrootcert` its URLs carry ("system" for RDS Proxy's Amazon Root CA, docs/tls.md).
    pooler: pulumi.Output[HostPort] | None = None
    pooler_sslrootcert: str | None = None
    # Cloud SQL's unix-socket directory (`/cloudsql/project:region:instance`) for the socket form of the URL.
    socket_dir: pulumi.Output[str] | None = None
    release_dependencies: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        settings: Settings,
        admin_password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        self.admin_password = pulumi.Output.secret(admin_password)
        self.ca_certificate = pulumi.Output.from_input("")
        self._declare(name, settings, admin_password)
        self.register_outputs(
            {
                "host": self.host,
                "port": self.port,
                "databaseName": self.database_name,
                "adminUser": self.admin_user,
                "adminPassword": self.admin_password,
                "readers": self.readers,
                "caCertificate": self.ca_certificate,
            }
        )

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        raise NotImplementedError

    def declare_pooler(self, name: str, settings: Settings, logins: Mapping[str, pulumi.Output[str]]) -> None:
        """A pooler that must know the service logins' passwords (RDS Proxy's secrets), declared once they exist;
        `logins` maps each service login role to its password. Providers without one (or whose pooler looks the
        logins up itself, like the local PgBouncer) do nothing."""
