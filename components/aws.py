"""AWS RDS for PostgreSQL: parameter group, network, primary and read replicas. Knows AWS and nothing else."""

from __future__ import annotations

import math
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.cluster import DatabaseCluster, HostPort
from components.settings import STORAGE_GB_RANGE, Settings
from components.sizing import rds_instance_class
from dbops.names import cloud_name

ENGINE_MAJOR_VERSION = "16"  # pinned: a major upgrade is a deliberate change of this line, never a surprise
PORT = 5432
# Backups first, maintenance after, so the two never overlap (UTC).
BACKUP_WINDOW = "03:00-04:00"
MAINTENANCE_WINDOW = "sun:05:00-sun:06:00"
LOG_EXPORTS = ["postgresql", "upgrade"]
MIN_STORAGE_GB = 20

# (name, value, apply method): static parameters only take effect on reboot, and AWS rejects "immediate" for them.
PARAMETERS = [
    ("rds.force_ssl", "1", "immediate"),
    ("shared_preload_libraries", "pg_stat_statements", "pending-reboot"),
    ("log_min_duration_statement", "100", "immediate"),
]


class AwsCluster(DatabaseCluster):
    TYPE = "gaia:aws:PostgresCluster"

    def _declare(self, name: str, settings: Settings, admin_password: pulumi.Input[str]) -> None:
        assert settings.aws is not None
        env = settings.environment
        # The seed's instance name: gaia-<env>.<region>.rds.amazonaws.com
        identifier = cloud_name(settings.provider, env)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.is_prod)

        # The configured VPC, or the account's default VPC when none is named.
        vpc = aws.ec2.get_vpc_output(
            id=settings.aws.vpc_id, default=None if settings.aws.vpc_id else True,
            opts=pulumi.InvokeOptions(parent=self),
        )
        vpc_id = vpc.id
        subnet_ids: pulumi.Input[list[str]] = list(settings.aws.subnet_ids) or aws.ec2.get_subnets_output(
            filters=vpc_id.apply(lambda v: [aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[v])]),
            opts=pulumi.InvokeOptions(parent=self),
        ).ids

        # The groups are auto-named from their resource names: a change that replaces one (a new parameter group
        # family on a major upgrade, say) creates the new group before deleting the old, which a fixed name forbids.
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=subnet_ids, description=f"gaia-db {env}: the database's subnets", opts=child,
        )
        # Ingress only from what the stack names; with nothing named, only from inside the VPC itself.
        cidrs: pulumi.Input[list[str]] = list(settings.aws.allowed_cidrs)
        if not settings.aws.allowed_cidrs and not settings.aws.allowed_security_group_ids:
            cidrs = vpc.cidr_block.apply(lambda block: [block])
        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description=f"gaia-db {env}: PostgreSQL from allowed networks only",
            vpc_id=vpc_id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="PostgreSQL",
                    protocol="tcp",
                    from_port=PORT,
                    to_port=PORT,
                    cidr_blocks=cidrs,
                    security_groups=list(settings.aws.allowed_security_group_ids),
                )
            ],
            opts=child,
        )
        parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{ENGINE_MAJOR_VERSION}",
            description=f"gaia-db {env}: TLS only, pg_stat_statements, slow-query log",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name=key, value=value, apply_method=method)
                for key, value, method in PARAMETERS
            ],
            opts=child,
        )

        instance_class = rds_instance_class(settings.size, production=settings.is_prod)
        # RDS for PostgreSQL on gp3 starts at 20 GiB; the dev tier's 10 GB is rounded up to it.
        storage = max(settings.size.storage_gb, MIN_STORAGE_GB)
        common: dict[str, Any] = dict(
            instance_class=instance_class,
            storage_type="gp3",
            # The storage autoscaling ceiling: AWS wants it at least 10 % above the allocation.
            max_allocated_storage=max(min(storage * 2, STORAGE_GB_RANGE[1]), math.ceil(storage * 1.1)),
            storage_encrypted=True,
            publicly_accessible=False,
            vpc_security_group_ids=[security_group.id],
            parameter_group_name=parameter_group.name,
            port=PORT,
            allow_major_version_upgrade=False,
            auto_minor_version_upgrade=True,
            deletion_protection=settings.is_prod,
            performance_insights_enabled=settings.is_prod,
            enabled_cloudwatch_logs_exports=LOG_EXPORTS,
            maintenance_window=MAINTENANCE_WINDOW,
            copy_tags_to_snapshot=True,
            tags={"project": "gaia-db", "environment": env},
        )

        final_snapshot: pulumi.Input[str] | None = None
        if env != "dev":
            # Unique per instance, so deleting and recreating never collides with an older final snapshot.
            suffix = random.RandomId(f"{name}-final-snapshot", byte_length=4, opts=child)
            final_snapshot = suffix.hex.apply(lambda hex_id: f"{identifier}-final-{hex_id}")

        self.primary = aws.rds.Instance(
            f"{name}-primary",
            identifier=identifier,
            engine="postgres",
            engine_version=ENGINE_MAJOR_VERSION,
            db_name=settings.database_name,
            username=f"gaia_{env}",
            password=admin_password,
            allocated_storage=storage,
            db_subnet_group_name=subnet_group.name,
            multi_az=settings.is_prod,
            backup_retention_period=settings.backup_retention_days,
            backup_window=BACKUP_WINDOW,
            skip_final_snapshot=final_snapshot is None,
            final_snapshot_identifier=final_snapshot,
            **common,
            opts=stateful,
        )
        self.replicas = [
            aws.rds.Instance(
                f"{name}-replica-{index}",
                identifier=f"{identifier}-replica-{index}",
                replicate_source_db=self.primary.identifier,
                skip_final_snapshot=True,  # a replica's data is the primary's
                **common,
                opts=stateful,
            )
            for index in range(1, settings.read_replicas + 1)
        ]

        self.host = self.primary.address
        self.port = self.primary.port
        self.database_name = self.primary.db_name.apply(lambda db: db or settings.database_name)
        self.admin_user = self.primary.username
        self.readers = pulumi.Output.all(*[[r.address, r.port] for r in self.replicas]).apply(_host_ports)
        self.sslmode = "require"  # rds.force_ssl=1 refuses anything else
        self.release_dependencies = [self.primary, *self.replicas]


def _host_ports(pairs: list[list[object]]) -> list[HostPort]:
    return [{"host": str(host), "port": int(str(port))} for host, port in pairs]
