"""The small contract every provider component fulfils, so the rest of the program never asks which cloud it is on."""

from __future__ import annotations

from typing import TypedDict

import pulumi


class HostPort(TypedDict):
    host: str
    port: int


class DatabaseCluster(pulumi.ComponentResource):
    """A PostgreSQL primary (plus read replicas) and its admin login.

    Subclasses declare their cloud's resources as children and set every attribute below, then call
    `register_outputs`. `release_dependencies` are the resources the post-deploy release must wait for
    (the primary, its replicas, and anything that makes the admin login valid).
    """

    host: pulumi.Output[str]
    port: pulumi.Output[int]
    database_name: pulumi.Output[str]
    admin_user: pulumi.Output[str]
    admin_password: pulumi.Output[str]  # secret
    readers: pulumi.Output[list[HostPort]]
    sslmode: str
    # Cloud SQL's unix-socket directory (`/cloudsql/project:region:instance`) for the socket form of the URL.
    socket_dir: pulumi.Output[str] | None = None
    release_dependencies: list[pulumi.Resource]

    def _finish(self) -> None:
        self.register_outputs(
            {
                "host": self.host,
                "port": self.port,
                "databaseName": self.database_name,
                "adminUser": self.admin_user,
                "adminPassword": self.admin_password,
                "readers": self.readers,
            }
        )
