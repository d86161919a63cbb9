"""The `local` provider: a real PostgreSQL primary and its streaming replicas on the developer's machine.

Three `pulumi_command.local.Command` resources, each a bash script from `scripts/local/` with its settings in the
environment (the admin password as a secret there, never in the script text or on a command line):

- `<name>-primary`: initdb, the cluster's own CA and the server certificate it signs (`<dataDir>/tls/`),
  configuration, roles, database and admin password; it is the owner of the data directory, so its delete stops every
  server and removes the directory. Its stdout is the CA certificate: the URLs verify the server against it
  (`sslmode=verify-full`, `sslrootcert=<dataDir>/tls/ca.crt`) and the stack exports it as `caCertificate`.
- `<name>-replicas`: `readReplicas` streaming replicas on the next ports. The count is in its environment, so a new
  count is an *update* of this resource alone (the script adds or removes replicas); the primary never sees it.
- `<name>-pooler`: PgBouncer in front of the primary on `local.poolerPort` (TLS on both sides, SCRAM through
  `auth_query`); started, converged and stopped like the servers (`pooler.sh`, `pooler-stop.sh`).

The scripts converge: re-running them on a cluster that is already right changes nothing, which is also why
`update` is the create script. The machine's boot id is in every environment, so the first `pulumi up` after a
reboot is an update that starts the servers again. The data directory and the port are `triggers`: pulumi-command
replaces a Command when a trigger changes, and `delete_before_replace` stops the old cluster before a new one takes
its place.

When `pulumi up` runs as root the servers run as the `postgres` user, which must be able to reach the data
directory; the scripts stop with a clear sentence when it cannot (choose a `local.dataDir` such as
`/var/tmp/gaia-db/local`, or run as a regular user).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pulumi
from pulumi_command import local as command

from components.cluster import DatabaseCluster, HostPort
from components.scripts import INTERPRETER, load
from components.settings import Settings
from components.tls import pem_certificates
from dbops.names import PASSWORD_LOGIN_ROLES, PASSWORD_LOGINS, POOLER_ROLE, POOLER_SCHEMA, READER

ADMIN_USER = "gaia_admin"  # LOGIN CREATEROLE CREATEDB, owner of the database, not a superuser (like an RDS master)
HOST = "127.0.0.1"


def absolute_data_dir(data_dir: str) -> str:
    """`local.dataDir` as an absolute path; a relative one is relative to the project directory (Pulumi runs the
    program there)."""
    return os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(data_dir)))


def boot_id() -> str:
    """Changes when the machine reboots, and only then: in both Commands' environment it makes the first
    `pulumi up` after a reboot an update, which starts the stopped servers again (the scripts converge)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        pass
    try:  # macOS
        return subprocess.run(
            ["sysctl", "-n", "kern.boottime"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ca_certificate_path(data_dir: str) -> str:
    """Where create.sh keeps the cluster's CA certificate (lib.sh `ensure_tls`)."""
    return os.path.join(data_dir, "tls", "ca.crt")


class LocalCluster(DatabaseCluster):
    TYPE = "gaia:local:PostgresCluster"

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        assert settings.local is not None  # parse_settings gives a local stack its local settings
        port = settings.local.port
        data_dir = absolute_data_dir(settings.local.data_dir)
        where = {"GAIA_DATA_DIR": data_dir, "GAIA_PORT": str(port), "GAIA_BOOT_ID": boot_id()}
        # A new place or port is a new cluster; the old one must be gone first (same port, same directory).
        identity: list[object] = [data_dir, port]

        self.primary = command.Command(
            f"{name}-primary",
            create=load("local/lib.sh", "local/create.sh"),
            update=load("local/lib.sh", "local/create.sh"),
            delete=load("local/lib.sh", "local/delete.sh"),
            environment={
                **where,
                "GAIA_DATABASE": settings.database_name,
                "GAIA_ADMIN_USER": ADMIN_USER,
                "GAIA_ADMIN_PASSWORD": pulumi.Output.secret(admin_password),
            },
            interpreter=INTERPRETER,
            triggers=identity,
            # Progress goes to stderr and the scripts print no secret; the scripts read state from the data
            # directory, not from the previous run's output.
            logging=command.Logging.STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.replicas = command.Command(
            f"{name}-replicas",
            create=load("local/lib.sh", "local/replicas.sh"),
            update=load("local/lib.sh", "local/replicas.sh"),
            delete=load("local/lib.sh", "local/remove-replicas.sh", "local/replicas.sh"),
            environment={**where, "GAIA_REPLICAS": str(settings.read_replicas)},
            interpreter=INTERPRETER,
            triggers=identity,
            logging=command.Logging.STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.primary], delete_before_replace=True),
        )

        # issue 19: PgBouncer in front of the primary, TLS on both sides, SCRAM through auth_query (pooler.sh). Its
        # port is an update (the script restarts it); a new cluster is a new pooler, like the replicas.
        self.pooler_command = command.Command(
            f"{name}-pooler",
            create=load("local/lib.sh", "local/pooler.sh"),
            update=load("local/lib.sh", "local/pooler.sh"),
            delete=load("local/lib.sh", "local/pooler-stop.sh"),
            environment={
                **where,
                "GAIA_DATABASE": settings.database_name,
                "GAIA_POOLER_PORT": str(settings.local.pooler_port),
                "GAIA_POOLER_ROLE": POOLER_ROLE,
                "GAIA_POOLER_SCHEMA": POOLER_SCHEMA,
                # Both logins of every service (credentialsVersion alternates them); never the admin or the reader.
                "GAIA_POOLER_LOGINS": " ".join(
                    PASSWORD_LOGIN_ROLES[login] for login in PASSWORD_LOGINS if login != READER
                ),
            },
            interpreter=INTERPRETER,
            triggers=identity,
            logging=command.Logging.STDERR,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.primary], delete_before_replace=True),
        )
        self.pooler = pulumi.Output.from_input(HostPort(host=HOST, port=settings.local.pooler_port))
        self.pooler_sslrootcert = ca_certificate_path(data_dir)

        readers: list[HostPort] = [{"host": HOST, "port": port + i} for i in range(1, settings.read_replicas + 1)]
        self.host = pulumi.Output.from_input(HOST)
        self.port = pulumi.Output.from_input(port)
        self.database_name = pulumi.Output.from_input(settings.database_name)
        self.admin_user = pulumi.Output.from_input(ADMIN_USER)
        self.readers = pulumi.Output.from_input(readers)
        # Verified against the cluster's own CA, on this machine, where every client can read the same file.
        self.sslmode = "verify-full"
        self.sslrootcert = ca_certificate_path(data_dir)
        # The CA is public: plain, whatever the Command's outputs inherit from its secret environment.
        self.ca_certificate = pulumi.Output.unsecret(self.primary.stdout.apply(pem_certificates))
        self.release_dependencies = [self.primary, self.replicas, self.pooler_command]
