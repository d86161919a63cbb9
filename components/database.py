"""PortableDatabase: one environment's PostgreSQL on the stack's provider, its credentials, and its connection URLs."""

from __future__ import annotations

import importlib
import ipaddress

import pulumi
import pulumi_random as random

from components.cluster import DatabaseCluster
from components.release import Release
from components.settings import Provider, ReleaseTunnel, Settings
from dbops.names import (
    ADMIN_KEY_PREFIX,
    PASSWORD_LOGIN_ROLES,
    READER,
    SECOND_LOGINS,
    SERVICES,
    active_login,
)
from dbops.revisions import head_revision
from dbops.urls import build_url

# Each provider's module is imported only when its stack needs it: the cloud SDKs are large (loading pulumi_aws.ec2
# alone costs half a second, bench/RESULTS.md).
CLUSTER_CLASSES: dict[Provider, tuple[str, str]] = {
    "aws": ("components.aws", "AwsCluster"),
    "gcp": ("components.gcp", "GcpCluster"),
    "fly": ("components.fly", "FlyCluster"),
    "local": ("components.local", "LocalCluster"),
}
PASSWORD_LENGTH = 40
API_KEY_LENGTH = 48


def _cluster_class(provider: Provider) -> type[DatabaseCluster]:
    module, name = CLUSTER_CLASSES[provider]
    cls: type[DatabaseCluster] = getattr(importlib.import_module(module), name)
    return cls


def _secret(
    name: str, parent: pulumi.Resource, length: int, keepers: dict[str, str] | None = None
) -> random.RandomPassword:
    # Letters and digits only: RDS refuses '/', '@', '"' and spaces in a master password, and URLs stay readable.
    return random.RandomPassword(
        name, length=length, special=False, keepers=keepers, opts=pulumi.ResourceOptions(parent=parent)
    )


def tunnel_target(
    tunnel: ReleaseTunnel, host: pulumi.Output[str], sslmode: str
) -> tuple[pulumi.Input[str], int, str, str | None]:
    """(host, port, sslmode, hostaddr) for the release through `releaseUrl` (docs/tls.md, "Tunnels").

    A tunnel named by its address (127.0.0.1) keeps the database's own host name for verify-full and sends the socket
    to the tunnel (libpq `hostaddr`). A tunnel named by a host name is where the socket goes, and the certificate
    cannot carry that name: the release then verifies the CA only. An sslmode in releaseUrl is taken as given (the
    Cloud SQL Auth Proxy's local listener is plaintext: `sslmode=disable`, the proxy verifying the instance).
    """
    try:
        ipaddress.ip_address(tunnel.host)
    except ValueError:
        return tunnel.host, tunnel.port, tunnel.sslmode or ("verify-ca" if sslmode == "verify-full" else sslmode), None
    return host, tunnel.port, tunnel.sslmode or sslmode, tunnel.host


def login_epochs(credentials_version: int) -> tuple[int, int]:
    """(service role's, second login's) epoch: the latest version at which each became the active login. A login's
    password is replaced exactly when its epoch moves, i.e. when a bump makes it the active one; the other login keeps
    its password (alternating users). The service role is active on odd versions, its second login on even ones."""
    own = credentials_version if credentials_version % 2 else credentials_version - 1
    second = credentials_version if not credentials_version % 2 else credentials_version - 1
    return own, second


def _epoch_keepers(epoch: int) -> dict[str, str] | None:
    # Epoch 1 has no keepers: the service roles' passwords of a stack from before credentialsVersion stay as they are.
    return None if epoch == 1 else {"credentialsVersion": str(epoch)}


class PortableDatabase(pulumi.ComponentResource):
    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gaia:index:PortableDatabase", name, None, opts)

        admin_password = _secret(f"{name}-admin-password", self, PASSWORD_LENGTH)
        # One password per managed login: each service's two logins (the service role and its second login, which
        # credentialsVersion alternates between) and the read-only reader's (readerUrls). The release sets them all the
        # same way (dbops.release role_passwords), each only when it changed.
        own_epoch, second_epoch = login_epochs(settings.credentials_version)
        role_secrets = {
            service: _secret(f"{name}-{service}-password", self, PASSWORD_LENGTH, _epoch_keepers(own_epoch))
            for service in SERVICES
        }
        role_secrets[READER] = _secret(f"{name}-{READER}-password", self, PASSWORD_LENGTH)
        role_secrets |= {
            SECOND_LOGINS[service]: _secret(
                f"{name}-{service}-alt-password", self, PASSWORD_LENGTH, {"credentialsVersion": str(second_epoch)}
            )
            for service in SERVICES
        }
        # service -> the login its URLs carry: the one whose password the latest bump set.
        self.active_logins = {service: active_login(service, settings.credentials_version) for service in SERVICES}
        # Bumping adminKeyVersion replaces this password, which is how the admin API key is rotated.
        admin_key = _secret(
            f"{name}-admin-api-key", self, API_KEY_LENGTH, keepers={"version": str(settings.admin_key_version)}
        )
        credentials: list[pulumi.Resource] = [admin_password, admin_key, *role_secrets.values()]
        self.role_passwords: dict[str, pulumi.Output[str]] = {s: secret.result for s, secret in role_secrets.items()}
        # The same format as the CLI's generated key (dbops.seed): `gaia_` + random, recognisable to secret scanners.
        # Secret by the engine's additionalSecretOutputs already; wrapped here so no engine can make it plain.
        self.admin_api_key: pulumi.Output[str] = pulumi.Output.secret(
            admin_key.result.apply(lambda key: ADMIN_KEY_PREFIX + key)
        )

        # An adopted database keeps its existing admin password (adminPassword) until the runbook's hand-over removes
        # the key; the generated one is declared either way, so that hand-over is a config change, not a new resource.
        admin_password_value = settings.admin_password if settings.admin_password is not None else admin_password.result
        self.cluster = _cluster_class(settings.provider)(
            name, settings, admin_password_value, pulumi.ResourceOptions(parent=self)
        )

        cluster = self.cluster
        user, password = cluster.admin_user, cluster.admin_password

        def url(user: pulumi.Input[str], password: pulumi.Input[str], host: pulumi.Input[str],
                port: pulumi.Input[int], sslmode: str | None = None, hostaddr: str | None = None,
                sslrootcert: str | None = cluster.sslrootcert) -> pulumi.Output[str]:
            return pulumi.Output.secret(
                pulumi.Output.all(user, password, host, port, cluster.database_name).apply(
                    lambda a: build_url(user=a[0], password=a[1], host=a[2], port=int(a[3]), database=a[4],
                                        sslmode=sslmode or cluster.sslmode, sslrootcert=sslrootcert,
                                        hostaddr=hostaddr)
                )
            )

        self.database_url = url(user, password, cluster.host, cluster.port)

        def on_replicas(login: str) -> pulumi.Output[list[str]]:
            """`login`'s URL on each read replica: roles and passwords live in the primary and replicate."""
            return pulumi.Output.secret(
                cluster.readers.apply(
                    lambda readers: pulumi.Output.all(*[
                        url(PASSWORD_LOGIN_ROLES[login], self.role_passwords[login], r["host"], r["port"])
                        for r in readers
                    ])
                )
            )

        # The replicas' URLs log in as the read-only gaia_reader (analytics, operations), never as the admin.
        self.reader_urls: pulumi.Output[list[str]] = on_replicas(READER)
        # Each service's own login on each replica, for the read traffic it moves off the primary.
        self.service_reader_urls: pulumi.Output[dict[str, list[str]]] = pulumi.Output.secret(
            pulumi.Output.all(**{service: on_replicas(self.active_logins[service]) for service in SERVICES})
        )
        self.service_urls: pulumi.Output[dict[str, str]] = pulumi.Output.secret(
            pulumi.Output.all(**{
                service: url(PASSWORD_LOGIN_ROLES[login], self.role_passwords[login], cluster.host, cluster.port)
                for service, login in self.active_logins.items()
            })
        )
        # issue 19: each service's active login through the pooler (PgBouncer, RDS Proxy), where there is one; {}
        # elsewhere. serviceUrls stay direct, and the release always connects directly (its session advisory lock).
        self.pooler_urls: pulumi.Output[dict[str, str]] = pulumi.Output.secret({})
        cluster.declare_pooler(name, settings, {
            PASSWORD_LOGIN_ROLES[login]: self.role_passwords[login]
            for service in SERVICES for login in (service, SECOND_LOGINS[service])
        })
        pooler = cluster.pooler
        if pooler is not None:
            self.pooler_urls = pulumi.Output.secret(
                pooler.apply(lambda p: pulumi.Output.all(**{
                    service: url(PASSWORD_LOGIN_ROLES[login], self.role_passwords[login], p["host"], p["port"],
                                 sslrootcert=cluster.pooler_sslrootcert)
                    for service, login in self.active_logins.items()
                }))
            )
        # Cloud SQL's unix-socket form of the admin login, for operations through the Auth Proxy's socket directory;
        # a service uses its own serviceUrls entry with `?host=/cloudsql/…` instead (README, "Stack outputs").
        self.socket_url: pulumi.Output[str] | None = None
        if cluster.socket_dir is not None:
            self.socket_url = pulumi.Output.secret(
                pulumi.Output.all(user, password, cluster.database_name, cluster.socket_dir).apply(
                    lambda a: build_url(user=a[0], password=a[1], host="", port=0, database=a[2],
                                        sslmode=cluster.sslmode, socket_dir=a[3])
                )
            )

        # The release reaches the database directly, or through the tunnel the stack names (releaseUrl).
        tunnel = settings.release_tunnel
        connection_url = self.database_url
        if tunnel is not None:
            connection_url = url(user, password, *tunnel_target(tunnel, cluster.host, cluster.sslmode))
        self.release = Release(
            f"{name}-release",
            connection_url=connection_url,
            endpoint=pulumi.Output.concat(cluster.host, ":", cluster.port.apply(str), "/", cluster.database_name),
            environment=settings.environment,
            admin_email=settings.admin_email,
            provider=settings.provider,
            role_passwords=self.role_passwords,
            admin_api_key=self.admin_api_key,
            ca_certificate=cluster.ca_certificate,
            migration_head=head_revision(),
            opts=pulumi.ResourceOptions(
                parent=self,
                # After the primary, its replicas and every credential exist: the release logs in and sets them.
                depends_on=[*cluster.release_dependencies, *credentials],
            ),
        )
        self.register_outputs({"databaseUrl": self.database_url, "serviceUrls": self.service_urls})
