"""AWS RDS for PostgreSQL: parameter group, network, primary and read replicas. Knows AWS and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.cluster import DatabaseCluster, HostPort
from components.settings import Settings, SettingsError
from components.sizing import max_connections_for, rds_class, storage_ceiling_gb
from dbops.names import cloud_name

ENGINE_MAJOR_VERSION = "16"  # pinned: a major upgrade is a deliberate change of this line, never a surprise
PORT = 5432
# Backups first, maintenance after, so the two never overlap (UTC).
BACKUP_WINDOW = "03:00-04:00"
MAINTENANCE_WINDOW = "sun:05:00-sun:06:00"
LOG_EXPORTS = ["postgresql", "upgrade"]
MIN_STORAGE_GB = 20
MAX_STORAGE_GB = 65_536  # RDS for PostgreSQL's gp3 ceiling (64 TiB), for the allocation and for autoscaling alike
# The RDS instance inputs whose change replaces the instance (schema ForceNew in terraform-provider-aws
# internal/service/rds/instance.go, docs/lifecycle.md) that this program sets. The final-snapshot suffix is keyed on
# them, so every instance generation leaves its own final snapshot and a second deletion never hits
# DBSnapshotAlreadyExists.
REPLACING_INPUTS = ("identifier", "engine", "db_name", "username", "storage_encrypted")

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
        # Plain invokes (they block until answered), so a network that cannot hold the database stops the program
        # before anything is declared.
        invoke = pulumi.InvokeOptions(parent=self)
        vpc = aws.ec2.get_vpc(id=settings.aws.vpc_id, default=None if settings.aws.vpc_id else True, opts=invoke)
        vpc_id = vpc.id
        subnet_ids = list(settings.aws.subnet_ids) or list(aws.ec2.get_subnets(
            filters=[aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc_id])], opts=invoke,
        ).ids)
        # An RDS subnet group must cover at least two availability zones (DBSubnetGroupDoesNotCoverEnoughAZs).
        zones = sorted({aws.ec2.get_subnet(id=subnet, opts=invoke).availability_zone for subnet in subnet_ids})
        if len(zones) < 2:
            key = "aws.subnetIds" if settings.aws.subnet_ids else "aws.vpcId"
            value = list(subnet_ids) if settings.aws.subnet_ids else vpc_id
            raise SettingsError(
                f"gaia-db:{key} is {json.dumps(value)}, but its subnets lie in {len(zones)} availability zone(s) "
                f"({', '.join(str(zone) for zone in zones) or 'none'}) and an RDS subnet group needs subnets in at "
                "least two."
            )

        # The groups are auto-named from their resource names: a change that replaces one (a new parameter group
        # family on a major upgrade, say) creates the new group before deleting the old, which a fixed name forbids.
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=subnet_ids, description=f"gaia-db {env}: the database's subnets", opts=child,
        )
        # Ingress only from what the stack names; with nothing named, only from inside the VPC itself.
        cidrs: pulumi.Input[list[str]] = list(settings.aws.allowed_cidrs)
        if not settings.aws.allowed_cidrs and not settings.aws.allowed_security_group_ids:
            cidrs = [vpc.cidr_block]
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
        # The smallest class meeting the size with room for every pool at its peak (settings checked it exists).
        instance_class = rds_class(settings.size, production=settings.is_prod,
                                   connections=settings.pool.connections_needed)
        # Explicit, so the connection budget (README) holds whatever RDS's default formula does; static parameter.
        max_connections = max_connections_for(instance_class.memory_mb)
        parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{ENGINE_MAJOR_VERSION}",
            description=f"gaia-db {env}: TLS only, pg_stat_statements, slow-query log",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name=key, value=value, apply_method=method)
                for key, value, method in [*PARAMETERS, ("max_connections", str(max_connections), "pending-reboot")]
            ],
            opts=child,
        )

        # RDS for PostgreSQL on gp3 starts at 20 GiB; the dev tier's 10 GB is rounded up to it.
        storage = max(settings.size.storage_gb, MIN_STORAGE_GB)
        # Storage autoscaling up to twice the allocation, at least 10 % above it (AWS's rule), never above RDS's
        # 64 TiB; 0 turns autoscaling off where no such ceiling exists. The provider suppresses the diff of an
        # autoscaled allocated_storage while autoscaling is on (instance.go, allocated_storage DiffSuppressFunc).
        ceiling = storage_ceiling_gb(storage, MAX_STORAGE_GB)
        tags = {**settings.tags, "project": "gaia-db", "environment": env}
        common: dict[str, Any] = dict(
            instance_class=instance_class.name,
            storage_type="gp3",
            max_allocated_storage=ceiling or 0,
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
            tags=tags,
        )
        primary_inputs: dict[str, Any] = dict(
            identifier=identifier,
            engine="postgres",
            db_name=settings.database_name,
            username=f"gaia_{env}",
            storage_encrypted=True,
        )

        final_snapshot: pulumi.Input[str] | None = None
        if env != "dev":
            # One suffix per instance generation: the RandomId is replaced whenever an input that replaces the
            # instance changes, so the replaced instance's final snapshot and the next one's never share a name.
            suffix = random.RandomId(
                f"{name}-final-snapshot", byte_length=4,
                keepers={key: str(primary_inputs[key]) for key in REPLACING_INPUTS},
                opts=child,
            )
            final_snapshot = suffix.hex.apply(lambda hex_id: f"{identifier}-final-{hex_id}")

        self.primary = aws.rds.Instance(
            f"{name}-primary",
            engine_version=ENGINE_MAJOR_VERSION,
            password=admin_password,
            allocated_storage=storage,
            db_subnet_group_name=subnet_group.name,
            multi_az=settings.is_prod,
            backup_retention_period=settings.backup_retention_days,
            backup_window=BACKUP_WINDOW,
            skip_final_snapshot=final_snapshot is None,
            final_snapshot_identifier=final_snapshot,
            **primary_inputs,
            **common,
            opts=stateful,
        )
        self.replicas = [
            aws.rds.Instance(
                f"{name}-replica-{index}",
                identifier=f"{identifier}-replica-{index}",
                replicate_source_db=self.primary.identifier,
                storage_encrypted=True,
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
