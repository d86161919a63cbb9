"""Fly.io: an unmanaged Fly Postgres (postgres-flex) cluster driven through flyctl by `pulumi_command` resources.

Two commands, both children of the component:

- `<name>-cluster` creates `gaia-db-<env>` once (`fly postgres create`), finishes or re-creates one that an interrupted
  create left, adopts one that exists already, then on every change of its inputs brings it to the declared VM size,
  replica count, volume size and backups; deleting it destroys the app and its backup bucket.
- `<name>-postgres-password` makes the `postgres` user's password the stack's (see set-password.sh for how it stays
  off every command line) and creates the stack's database; it runs again whenever the cluster is a new one.

Secrets (the Fly API token, the admin password) reach the scripts only through the commands' `environment`; the
scripts never put them in an argument. Unmanaged Fly Postgres serves no TLS: clients reach it over Fly's WireGuard
private network (6PN), hence `sslmode=disable`: flyctl gives the Flycast services fly-proxy's `pg_tls` handler, but the
hop from the proxy to the machine stays plaintext and nothing in flyctl or postgres-flex says which certificate the
proxy would present (docs/fly.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
from pulumi_command import local

from components import sizing
from components.cluster import DatabaseCluster, HostPort
from components.scripts import INTERPRETER, load
from components.settings import Settings

ADMIN_USER = "postgres"
# postgres-flex listens on 5433; HAProxy on every member listens on 5432 and forwards to the current primary
# (fly-apps/postgres-flex config/haproxy.cfg); flyctl prints "Proxy port: 5432", "Postgres port: 5433"
# (flypg/launcher.go).
PRIMARY_PORT = 5432
DIRECT_PORT = 5433
# postgres-flex never turns on ssl in postgresql.conf (internal/flypg/pg.go), and HAProxy passes TCP through
# (config/haproxy.cfg); traffic rides Fly's WireGuard private network instead.
SSLMODE = "disable"

_PRESET = re.compile(r"^(shared-cpu|performance)-(\d+)x$")


def _cpu_kind_and_count(preset: str) -> tuple[str, int]:
    """`shared-cpu-2x` -> ("shared", 2): what `fly machine list --json` reports as guest.cpu_kind / guest.cpus."""
    match = _PRESET.match(preset)
    assert match is not None, preset  # every name in sizing.FLY_PRESETS has this form
    return ("shared" if match.group(1) == "shared-cpu" else "performance"), int(match.group(2))


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _summary(stdout: str | None) -> dict[str, Any]:
    """The cluster script's last line of stdout: {"clusterId", "primary", "replicas"}.

    The provider always records stdout as a string; only a mock engine that does not model it leaves it unset.
    """
    if stdout is None:
        return {"clusterId": "", "primary": None, "replicas": []}
    try:
        summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise pulumi.RunError("the Fly cluster script did not print its JSON summary; see its stderr.") from None
    return summary


def _readers(stdout: str | None, app: str) -> list[HostPort]:
    """One reader per standby, addressed by Fly's per-machine name `<id>.vm.<app>.internal` on postgres' own port.

    `<app>.internal:5433` would resolve to every member with the primary first, so it does not spread reads.
    """
    replicas: list[str] = _summary(stdout)["replicas"]
    return [{"host": f"{machine}.vm.{app}.internal", "port": DIRECT_PORT} for machine in replicas]


def _cluster_id(stdout: str | None) -> str:
    """The digest of the GAIA_DB_CLUSTER_ID secret the cluster script stages on a cluster it creates or adopts: a new
    value means a new cluster. Not the app's `ID` (flyctl prints the name there, flyctl #5185), nor a machine or
    volume id (a failover or a clone changes those, and each re-apply restarts the database)."""
    return str(_summary(stdout)["clusterId"])


class FlyCluster(DatabaseCluster):
    TYPE = "gaia:fly:PostgresCluster"

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        fly = settings.fly
        assert fly is not None and settings.fly_api_token is not None  # parse_settings refuses a fly stack without
        vm = sizing.fly_vm(settings.size, production=settings.is_prod)
        cpu_kind, cpus = _cpu_kind_and_count(vm.size)

        app = fly.app_name
        token: pulumi.Output[str] = pulumi.Output.secret(settings.fly_api_token)  # already secret; stays so
        environment: dict[str, pulumi.Input[str]] = {
            "FLY_API_TOKEN": token,
            "GAIA_FLY_APP": app,
            "GAIA_FLY_ORG": fly.org,
            "GAIA_FLY_REGION": fly.region,
            "GAIA_FLY_VM_SIZE": vm.size,
            "GAIA_FLY_VM_CPU_KIND": cpu_kind,
            "GAIA_FLY_VM_CPUS": str(cpus),
            "GAIA_FLY_VM_MEMORY_MB": str(vm.memory_mb),
            "GAIA_FLY_VOLUME_GB": str(settings.size.storage_gb),
            "GAIA_FLY_CLUSTER_SIZE": str(1 + settings.read_replicas),
            "GAIA_FLY_WAL_BACKUPS": _flag(settings.point_in_time_recovery),
            # barman's recovery window, e.g. 7d (postgres-flex accepts ^\d+[dwy]$).
            "GAIA_FLY_RECOVERY_WINDOW": f"{settings.backup_retention_days}d" if settings.point_in_time_recovery else "",
            # Fly snapshots every volume daily; this is how long the snapshots are kept.
            "GAIA_FLY_SNAPSHOT_RETENTION_DAYS": str(settings.backup_retention_days),
            # Only a size, replica count or retention the stack sets itself may shrink the cluster or its backups.
            "GAIA_FLY_EXACT_SIZE": _flag(fly.exact_size),
            "GAIA_FLY_EXACT_REPLICAS": _flag(fly.exact_replicas),
            "GAIA_FLY_EXACT_RETENTION": _flag(fly.exact_retention),
            # An existing cluster is adopted only with its current password given (adminPassword).
            "GAIA_FLY_ADMIN_PASSWORD_GIVEN": _flag(settings.admin_password is not None),
        }

        # The environment is secret as a whole (it holds the token), so `pulumi preview` would only say [secret]
        # changed; the plain settings as the scripts' first line show which size, replica count or backup setting
        # moves. Never `triggers`: pulumi-command replaces a Command whose triggers change, and replacing this one
        # would run delete.sh (`fly apps destroy`) - a changed script text is an update.
        declared = "# gaia-db fly cluster: " + json.dumps(
            {key: value for key, value in environment.items() if key != "FLY_API_TOKEN"}, sort_keys=True
        ) + "\n"
        self.cluster_command = local.Command(
            f"{name}-cluster",
            create=declared + load("common.sh", "fly/lib.sh", "fly/create.sh"),
            update=declared + load("common.sh", "fly/lib.sh", "fly/update.sh"),
            delete=load("common.sh", "fly/lib.sh", "fly/delete.sh"),
            interpreter=INTERPRETER,
            environment=environment,
            # The scripts' stderr carries progress and flyctl's messages, never a secret (the one flyctl output
            # that holds a password, `fly postgres create`'s stdout, is discarded).
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=settings.protects_data,
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )

        summary = self.cluster_command.stdout
        self.password_command = local.Command(
            f"{name}-postgres-password",
            create=load("common.sh", "fly/lib.sh", "fly/set-password.sh"),
            update=load("common.sh", "fly/lib.sh", "fly/set-password.sh"),
            interpreter=INTERPRETER,
            # Only what set-password.sh reads: a resize must not rerun it (its `fly secrets import` restarts machines).
            environment={
                **{key: environment[key] for key in ("FLY_API_TOKEN", "GAIA_FLY_APP", "GAIA_FLY_ORG")},
                "GAIA_FLY_ADMIN_PASSWORD": pulumi.Output.secret(admin_password),
                "GAIA_FLY_DATABASE": settings.database_name,
            },
            # Re-applies the password (and the database) to a new cluster, not only when the password changes.
            triggers=[summary.apply(_cluster_id)],
            logging=local.Logging.NONE,
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.cluster_command],
                additional_secret_outputs=["stdout", "stderr"],
            ),
        )

        self.host = pulumi.Output.from_input(f"{app}.flycast")  # Flycast: fly-proxy to HAProxy -> the primary
        self.port = pulumi.Output.from_input(PRIMARY_PORT)
        self.database_name = pulumi.Output.from_input(settings.database_name)
        self.admin_user = pulumi.Output.from_input(ADMIN_USER)
        self.readers = summary.apply(lambda text: _readers(text, app))
        self.sslmode = SSLMODE
        self.release_dependencies = [self.cluster_command, self.password_command]
