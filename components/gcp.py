"""Google Cloud SQL for PostgreSQL: primary, database, admin user and read replicas. Knows GCP and nothing else."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.cluster import DatabaseCluster, HostPort
from components.settings import Settings
from components.sizing import cloudsql_tier
from dbops.names import cloud_name

DATABASE_VERSION = "POSTGRES_16"
# Pinned on primary and replicas alike: without it GCP picks the edition, and replicas must match their primary.
EDITION = "ENTERPRISE"
PORT = 5432
MAX_LOG_DAYS = 7
BACKUP_START_UTC = "03:00"
MAINTENANCE_WINDOW = gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(day=7, hour=5)  # Sunday 05:00 UTC
FLAGS = [
    gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="log_min_duration_statement", value="100"),
]


class GcpCluster(DatabaseCluster):
    TYPE = "gaia:gcp:PostgresCluster"

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        assert settings.gcp is not None
        env = settings.environment
        instance_name = cloud_name(settings.provider, env)  # the seed's /cloudsql/project:region:gaia-<env>
        private_network = settings.gcp.private_network
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.is_prod)

        # No authorized networks ever: with a private network the instance has no public IP at all; without one,
        # its public IP admits only the Cloud SQL Auth Proxy / connectors (IAM-authorised), and TLS is mandatory.
        ip_configuration = gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
            ipv4_enabled=private_network is None,
            private_network=private_network,
            ssl_mode="ENCRYPTED_ONLY",
            authorized_networks=[],
        )
        tier = cloudsql_tier(settings.size)
        common: dict[str, Any] = dict(
            tier=tier,
            edition=EDITION,
            disk_type="PD_SSD",
            disk_size=settings.size.storage_gb,
            disk_autoresize=True,
            ip_configuration=ip_configuration,
            database_flags=FLAGS,
            insights_config=gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs(
                query_insights_enabled=True, record_application_tags=True, record_client_address=True
            ),
            maintenance_window=MAINTENANCE_WINDOW,
            deletion_protection_enabled=settings.is_prod,  # the API-level guard, besides Pulumi's below
            user_labels={"project": "gaia-db", "environment": env},
        )
        pitr = settings.point_in_time_recovery
        self.primary = gcp.sql.DatabaseInstance(
            f"{name}-primary",
            name=instance_name,
            database_version=DATABASE_VERSION,
            region=settings.gcp.region,
            project=settings.gcp.project,
            deletion_protection=settings.is_prod,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                availability_type="REGIONAL" if settings.is_prod else "ZONAL",
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    start_time=BACKUP_START_UTC,
                    point_in_time_recovery_enabled=pitr,
                    # Enterprise edition keeps at most 7 days of logs; longer retentions keep daily backups only.
                    transaction_log_retention_days=min(settings.backup_retention_days, MAX_LOG_DAYS) if pitr else None,
                    backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=settings.backup_retention_days, retention_unit="COUNT"
                    ),
                ),
                **common,
            ),
            opts=stateful,
        )
        self.replicas = [
            gcp.sql.DatabaseInstance(
                f"{name}-replica-{index}",
                name=f"{instance_name}-replica-{index}",
                master_instance_name=self.primary.name,
                database_version=DATABASE_VERSION,
                region=settings.gcp.region,
                project=settings.gcp.project,
                deletion_protection=settings.is_prod,
                replica_configuration=gcp.sql.DatabaseInstanceReplicaConfigurationArgs(failover_target=False),
                settings=gcp.sql.DatabaseInstanceSettingsArgs(availability_type="ZONAL", **common),
                opts=stateful,
            )
            for index in range(1, settings.read_replicas + 1)
        ]
        self.database = gcp.sql.Database(
            f"{name}-database",
            name=settings.database_name,
            instance=self.primary.name,
            project=settings.gcp.project,
            opts=stateful,
        )
        self.user = gcp.sql.User(
            f"{name}-admin",
            name=f"gaia_{env}",
            instance=self.primary.name,
            project=settings.gcp.project,
            password=admin_password,
            # Removing the user from the stack must not drop the login that owns roles and grants.
            deletion_policy="ABANDON",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.database]),
        )

        def address(instance: gcp.sql.DatabaseInstance) -> pulumi.Output[str]:
            return instance.private_ip_address if private_network else instance.public_ip_address

        self.host = address(self.primary)
        self.port = pulumi.Output.from_input(PORT)
        self.database_name = self.database.name
        self.admin_user = self.user.name
        self.readers = pulumi.Output.all(*[address(r) for r in self.replicas]).apply(
            lambda hosts: [HostPort(host=str(host), port=PORT) for host in hosts]
        )
        self.sslmode = "require"  # ENCRYPTED_ONLY refuses anything else
        self.socket_dir = self.primary.connection_name.apply(lambda connection: f"/cloudsql/{connection}")
        self.release_dependencies = [self.primary, *self.replicas, self.database, self.user]
