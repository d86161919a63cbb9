"""Google Cloud SQL for PostgreSQL: primary, database, admin user and read replicas. Knows GCP and nothing else.

Day-two facts this file is built on (docs/lifecycle.md has the table, with the upstream source of each):
- A grown disk is no change. `disk_size` is only the starting size: Cloud SQL grows the disk itself
  (`disk_autoresize`, bounded by `disk_autoresize_limit`), and older providers turn the smaller declared size into a
  replacement (terraform-provider-google `ForceNewIfChange("settings.0.disk_size", isDiskShrinkage)`, replaced by
  `diskSizeCutomizeDiff` in 8f745c0c, #24399). So `settings.diskSize` is in `ignore_changes` on every instance.
- Read replicas take no maintenance window (the API owns it; terraform-provider-google #7609, #7422).
- The API refuses retained backups that do not exceed the transaction-log days ("backup retention should be >
  transaction log retention", terraform-google-sql-db PR #785).
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_gcp import compute, monitoring, servicenetworking, sql

from components.cluster import DatabaseCluster, HostPort
from components.settings import Settings
from components.sizing import cloudsql_memory_mb, cloudsql_tier, max_connections_for, storage_ceiling_gb
from components.tls import CLOUDSQL_SERVER_CA_MODE, pem_certificates
from dbops import names

# The major version is gaia-db:majorVersion: raising it is Cloud SQL's in-place major upgrade (database_version is not
# ForceNew, docs/lifecycle.md); a snapshot is taken first by the API (docs/RUNBOOK.md, major upgrades).
# Pinned on primary and replicas alike: without it GCP picks the edition, and replicas must match their primary.
EDITION = "ENTERPRISE"
PORT = 5432
MAX_LOG_DAYS = 7  # Enterprise edition keeps at most 7 days of transaction logs
MAX_STORAGE_GB = 65_536  # Cloud SQL's 64 TB
BACKUP_START_UTC = "03:00"
MAINTENANCE_WINDOW = sql.DatabaseInstanceSettingsMaintenanceWindowArgs(day=7, hour=5)  # Sunday 05:00 UTC
# How long the backup taken when an instance is deleted is kept (staging and prod).
FINAL_BACKUP_RETENTION_DAYS = 30
# Cloud SQL grows the disk itself; the declared size is where it starts (module docstring).
DISK_SIZE_IGNORED = ["settings.diskSize"]
SERVICE_NETWORKING = "servicenetworking.googleapis.com"
# Query Insights as terraform-google-sql-db modules/postgresql sets it (insights_config: query_string_length 1024) and
# the Cloud SQL API's default of 5 sampled plans a minute, written out so they are the stack's, not a default's.
QUERY_STRING_LENGTH = 1024
QUERY_PLANS_PER_MINUTE = 5
# Alert thresholds (README "Alerts"), the same as the CloudWatch alarms' on AWS.
DISK_UTILIZATION = 0.85  # autoresize grows the disk before this unless it has reached disk_autoresize_limit
REPLICA_LAG_SECONDS = 300
TRANSACTION_ID_UTILIZATION = 0.5  # about 1e9 of the 2^31 transaction IDs before wraparound
CONNECTIONS_FRACTION = 0.80


def database_version(major: int) -> str:
    return f"POSTGRES_{major}"


def backup_days(retention_days: int) -> tuple[int, int]:
    """(transaction-log days, retained daily backups) for a tier's retention: the logs cover the window (at most
    the edition's 7 days), and one more backup than log days is kept, because the API wants retained backups >
    log days and the oldest log needs the backup it starts from."""
    log_days = min(retention_days, MAX_LOG_DAYS)
    return log_days, max(retention_days, log_days + 1)


class GcpCluster(DatabaseCluster):
    TYPE = "gaia:gcp:PostgresCluster"

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        assert settings.gcp is not None
        env = settings.environment
        # The seed's /cloudsql/project:region:gaia-<env>, or an adopted instance's name (gcp.instanceName).
        instance_name = settings.gcp.instance_name
        private_network = settings.gcp.private_network
        project, region = settings.gcp.project, settings.gcp.region
        depends_on: list[pulumi.Resource] = []

        if private_network and settings.gcp.private_services_access == "create":
            # Private IP needs private services access on the VPC: a reserved range peered with Google's services.
            peering_range = compute.GlobalAddress(
                f"{name}-private-services-range",
                project=project,
                network=private_network,
                purpose="VPC_PEERING",
                address_type="INTERNAL",
                prefix_length=16,
                description=f"gaia-db {env}: private services access for Cloud SQL",
                labels=settings.resource_tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            depends_on.append(servicenetworking.Connection(
                f"{name}-private-services",
                network=private_network,
                service=SERVICE_NETWORKING,
                reserved_peering_ranges=[peering_range.name],
                # Other services may come to share the peering: removing it from this stack leaves it in place.
                deletion_policy="ABANDON",
                opts=pulumi.ResourceOptions(parent=self),
            ))

        def instance_opts() -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self, protect=settings.protects_data, ignore_changes=DISK_SIZE_IGNORED, depends_on=depends_on,
            )

        # No authorized networks ever: with a private network the instance has no public IP at all; without one,
        # its public IP admits only the Cloud SQL Auth Proxy / connectors (IAM-authorised), and TLS is mandatory.
        ip_configuration = sql.DatabaseInstanceSettingsIpConfigurationArgs(
            ipv4_enabled=private_network is None,
            private_network=private_network,
            ssl_mode="ENCRYPTED_ONLY",
            # Pinned to the per-instance CA (Cloud SQL's default for a new instance, so an existing one is unchanged):
            # with a CA that signs only this instance, verify-ca admits this instance alone (docs/tls.md).
            server_ca_mode=CLOUDSQL_SERVER_CA_MODE,
            authorized_networks=[],
        )
        # The smallest tier meeting the size with room for every pool at its peak (settings checked it exists).
        tier = cloudsql_tier(settings.size, connections=settings.pool.connections_needed)
        max_connections = max_connections_for(cloudsql_memory_mb(tier))
        options = settings.gcp
        flags = [
            sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="log_min_duration_statement", value="100"),
            # Explicit, so the connection budget (README) holds: Cloud SQL's default is 100 on 3.75 GB.
            sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="max_connections", value=str(max_connections)),
        ]
        if options.iam_auth:
            # IAM database authentication (terraform-google-sql-db: database_flags cloudsql.iam_authentication=on);
            # IAM users then log in with an OAuth token as the password (docs/RUNBOOK.md, IAM logins).
            flags.append(sql.DatabaseInstanceSettingsDatabaseFlagArgs(name="cloudsql.iam_authentication", value="on"))
        insights = sql.DatabaseInstanceSettingsInsightsConfigArgs(
            query_insights_enabled=True, query_string_length=QUERY_STRING_LENGTH,
            query_plans_per_minute=QUERY_PLANS_PER_MINUTE, record_application_tags=True, record_client_address=True,
        ) if options.query_insights else sql.DatabaseInstanceSettingsInsightsConfigArgs(
            query_insights_enabled=False
        )
        ceiling = storage_ceiling_gb(settings.size.storage_gb, MAX_STORAGE_GB)
        common: dict[str, Any] = dict(
            tier=tier,
            edition=EDITION,
            disk_type="PD_SSD",
            disk_size=settings.size.storage_gb,
            disk_autoresize=True,
            disk_autoresize_limit=ceiling or MAX_STORAGE_GB,
            ip_configuration=ip_configuration,
            database_flags=flags,
            insights_config=insights,
            deletion_protection_enabled=settings.is_prod,  # the API-level guard, besides Pulumi's below
            user_labels=settings.resource_tags,
        )
        # ForceNew (docs/lifecycle.md): a key set on an existing instance replaces it (README, docs/RUNBOOK.md).
        encryption: dict[str, Any] = (
            {"encryption_key_name": options.encryption_key_name} if options.encryption_key_name else {}
        )
        pitr = settings.point_in_time_recovery
        log_days, retained_backups = backup_days(settings.backup_retention_days)
        keeps_final_backup = env != "dev"
        self.primary = sql.DatabaseInstance(
            names.child_name(name, "primary"),
            name=instance_name,
            database_version=database_version(settings.major_version),
            region=region,
            project=project,
            deletion_protection=settings.is_prod,
            **encryption,
            settings=sql.DatabaseInstanceSettingsArgs(
                availability_type="REGIONAL" if settings.is_prod else "ZONAL",
                backup_configuration=sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    start_time=BACKUP_START_UTC,
                    point_in_time_recovery_enabled=pitr,
                    transaction_log_retention_days=log_days,
                    backup_retention_settings=sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=retained_backups, retention_unit="COUNT"
                    ),
                ),
                maintenance_window=MAINTENANCE_WINDOW,  # the primary's only: replicas take none
                # Deleting (or replacing) the instance keeps its backups and takes a last one (staging, prod).
                retain_backups_on_delete=keeps_final_backup,
                final_backup_config=sql.DatabaseInstanceSettingsFinalBackupConfigArgs(
                    enabled=True, retention_days=FINAL_BACKUP_RETENTION_DAYS
                ) if keeps_final_backup else None,
                **common,
            ),
            opts=instance_opts(),
        )
        self.replicas = [
            sql.DatabaseInstance(
                names.replica_name(name, index),
                name=names.replica_name(instance_name, index),
                master_instance_name=self.primary.name,
                database_version=database_version(settings.major_version),
                region=region,
                project=project,
                deletion_protection=settings.is_prod,
                **encryption,
                replica_configuration=sql.DatabaseInstanceReplicaConfigurationArgs(failover_target=False),
                settings=sql.DatabaseInstanceSettingsArgs(
                    availability_type="ZONAL",
                    # gcp.replicaZones spreads the replicas over the region's zones (terraform-google-sql-db
                    # read_replicas[].zone); a zone change moves the replica in place (not ForceNew).
                    location_preference=sql.DatabaseInstanceSettingsLocationPreferenceArgs(
                        zone=options.replica_zones[(index - 1) % len(options.replica_zones)]
                    ) if options.replica_zones else None,
                    **common,
                ),
                opts=instance_opts(),
            )
            for index in range(1, settings.read_replicas + 1)
        ]
        if options.notification_channels:
            self._alert_policies(name, settings, instance_name, max_connections)
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.protects_data)
        self.database = sql.Database(
            names.child_name(name, "database"),
            name=settings.database_name,
            instance=self.primary.name,
            project=project,
            opts=stateful,
        )
        self.user = sql.User(
            names.child_name(name, "admin"),
            name=settings.gcp.admin_user,  # gaia_<env>, or an adopted instance's admin (gcp.adminUser)
            instance=self.primary.name,
            project=project,
            password=admin_password,
            # Removing the user from the stack must not drop the login that owns roles and grants.
            deletion_policy="ABANDON",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.database]),
        )

        def address(instance: sql.DatabaseInstance) -> pulumi.Output[str]:
            return instance.private_ip_address if private_network else instance.public_ip_address

        self.host = address(self.primary)
        self.port = pulumi.Output.from_input(PORT)
        self.database_name = self.database.name
        self.admin_user = self.user.name
        self.readers = pulumi.Output.all(*[address(r) for r in self.replicas]).apply(
            lambda hosts: [HostPort(host=str(host), port=PORT) for host in hosts]
        )
        # ENCRYPTED_ONLY refuses plaintext. The per-instance CA's server certificates carry the instance's name in
        # their CN and no subjectAltName, so no host name can be checked: verify-ca against the instances' own CAs.
        self.sslmode = "verify-ca"
        self.ca_certificate = pulumi.Output.unsecret(
            pulumi.Output.all(*[instance.server_ca_certs for instance in [self.primary, *self.replicas]]).apply(
                lambda lists: pem_certificates(*[cert.get("cert") for certs in lists for cert in certs or []])
            )
        )
        self.socket_dir = self.primary.connection_name.apply(lambda connection: f"/cloudsql/{connection}")
        self.release_dependencies = [self.primary, *self.replicas, self.database, self.user]

    def _alert_policies(self, name: str, settings: Settings, instance_name: str, max_connections: int) -> None:
        """Cloud Monitoring alert policies on what pages a database owner, to the configured channels; each covers
        the primary and its replicas (Cloud SQL's database_id is `project:instance`)."""
        assert settings.gcp is not None
        project, env = settings.gcp.project, settings.environment
        instances = f'resource.type = "cloudsql_database" AND resource.labels.database_id = ' \
                    f'starts_with("{project}:{instance_name}")'
        five_minutes = "300s"

        def threshold(metric: str, value: float, reducer: str | None = None) -> monitoring.AlertPolicyConditionArgs:
            aggregation = monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                alignment_period="60s", per_series_aligner="ALIGN_MAX",
                cross_series_reducer=reducer, group_by_fields=["resource.labels.database_id"] if reducer else None,
            )
            return monitoring.AlertPolicyConditionArgs(
                display_name=f"{metric} above {value:g}",
                condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=f'{instances} AND metric.type = "cloudsql.googleapis.com/database/{metric}"',
                    comparison="COMPARISON_GT", threshold_value=value, duration=five_minutes,
                    aggregations=[aggregation],
                ),
            )

        policies: dict[str, monitoring.AlertPolicyConditionArgs] = {
            "disk": threshold("disk/utilization", DISK_UTILIZATION),
            "transaction-ids": threshold("postgresql/transaction_id_utilization", TRANSACTION_ID_UTILIZATION),
            # num_backends is per database: summed per instance.
            "connections": threshold("postgresql/num_backends", float(int(CONNECTIONS_FRACTION * max_connections)),
                                     reducer="REDUCE_SUM"),
            "backups": monitoring.AlertPolicyConditionArgs(
                display_name="a backup failed",
                condition_matched_log=monitoring.AlertPolicyConditionConditionMatchedLogArgs(
                    filter=f'{instances} AND protoPayload.methodName : "backupRuns" AND severity >= ERROR',
                ),
            ),
        }
        if settings.read_replicas:
            policies["replica-lag"] = threshold("replication/replica_lag", REPLICA_LAG_SECONDS)
        for short, condition in policies.items():
            monitoring.AlertPolicy(
                f"{name}-alert-{short}",
                project=project,
                display_name=f"gaia-db {env}: {short}",
                combiner="OR",
                conditions=[condition],
                notification_channels=list(settings.gcp.notification_channels),
                # A log-match condition needs a notification rate limit.
                alert_strategy=monitoring.AlertPolicyAlertStrategyArgs(
                    notification_rate_limit=monitoring.AlertPolicyAlertStrategyNotificationRateLimitArgs(
                        period="3600s"
                    )
                ) if condition.condition_matched_log is not None else None,
                user_labels=settings.resource_tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.primary, *self.replicas]),
            )
