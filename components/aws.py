"""AWS RDS for PostgreSQL: parameter group, network, primary and read replicas. Knows AWS and nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_random as random
from pulumi_aws import cloudwatch, ec2, iam, rds, secretsmanager
from pulumi_command import local as command

from components.cluster import DatabaseCluster, HostPort
from components.scripts import INTERPRETER, load
from components.settings import Settings, SettingsError
from components.sizing import (
    RELEASE_CONNECTIONS,
    RESERVED_CONNECTIONS,
    max_connections_for,
    rds_class,
    storage_ceiling_gb,
)
from components.tls import RDS_CA_KINDS, RDS_TRUSTSTORE, pem_certificates
from dbops import names

# The major version is pinned by gaia-db:majorVersion (settings.DEFAULT_MAJOR_VERSION): raising it is an in-place
# ModifyDBInstance (engine_version is not ForceNew, docs/lifecycle.md), which allow_major_version_upgrade permits; it
# never changes otherwise, because engine_lifecycle_support keeps prod on RDS Extended Support (settings.py).
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
# Enhanced Monitoring's role, as terraform-aws-rds modules/db_instance (create_monitoring_role) declares it.
MONITORING_SERVICE = "monitoring.rds.amazonaws.com"
MONITORING_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
# Alarm thresholds (README "Alerts"): what pages a database owner.
FREE_STORAGE_FRACTION = 0.10  # of the declared allocation; autoscaling adds storage before this unless at its ceiling
REPLICA_LAG_SECONDS = 300
# Half of the 2^31 transaction IDs before wraparound (the RDS PostgreSQL guide's MaximumUsedTransactionIDs alarm).
MAX_USED_TRANSACTION_IDS = 1_000_000_000
CONNECTIONS_FRACTION = 0.80  # of max_connections
# RDS event categories sent to the topic; failed backups arrive as "backup" / "failure" events (no metric exists).
EVENT_CATEGORIES = ["backup", "failure", "failover", "low storage", "maintenance"]
GIB = 1024**3
# issue 21: the SSM bastion (aws.bastion). Amazon Linux 2023 carries the SSM agent; the image is resolved by EC2 at
# launch from AWS's public parameter, and `ami` is in ignore_changes so a newer image never replaces the bastion.
BASTION_AMI = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}"
BASTION_SERVICE = "ec2.amazonaws.com"
SSM_CORE_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# issue 19: RDS Proxy
PROXY_SERVICE = "rds.amazonaws.com"
PROXY_IDLE_CLIENT_SECONDS = 1800

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
        # The seed's instance name, gaia-<env>.<region>.rds.amazonaws.com, or an adopted instance's (aws.identifier).
        identifier = settings.aws.identifier
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.protects_data)

        # The configured VPC, or the account's default VPC when none is named.
        # Plain invokes (they block until answered), so a network that cannot hold the database stops the program
        # before anything is declared.
        invoke = pulumi.InvokeOptions(parent=self)
        vpc = ec2.get_vpc(id=settings.aws.vpc_id, default=None if settings.aws.vpc_id else True, opts=invoke)
        vpc_id = vpc.id
        subnet_ids = list(settings.aws.subnet_ids) or list(ec2.get_subnets(
            filters=[ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc_id])], opts=invoke,
        ).ids)
        # An RDS subnet group must cover at least two availability zones (DBSubnetGroupDoesNotCoverEnoughAZs).
        zones = sorted({ec2.get_subnet(id=subnet, opts=invoke).availability_zone for subnet in subnet_ids})
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
        # An adopted instance stays in its own group (aws.subnetGroupName): RDS cannot move an instance to another
        # subnet group in the same VPC (InvalidVPCNetworkStateFault), so the stack then declares none.
        subnet_group = None if settings.aws.subnet_group_name else rds.SubnetGroup(
            f"{name}-subnets", subnet_ids=subnet_ids, description=f"gaia-db {env}: the database's subnets",
            tags=settings.resource_tags, opts=child,
        )
        # Ingress only from what the stack names; with nothing named, only from inside the VPC itself.
        cidrs: pulumi.Input[list[str]] = list(settings.aws.allowed_cidrs)
        if not settings.aws.allowed_cidrs and not settings.aws.allowed_security_group_ids:
            cidrs = [vpc.cidr_block]
        # The bastion's group is one more allowed group: an in-place change of this group's rules, never of the
        # instance (vpc_security_group_ids stays the same group).
        allowed_groups: list[pulumi.Input[str]] = list(settings.aws.allowed_security_group_ids)
        if settings.aws.bastion is not None:
            allowed_groups.append(self._bastion(name, settings, vpc_id, vpc.cidr_block, subnet_ids))
        # issue 19: RDS Proxy's group takes the clients' ingress and is one more group the database admits (a rule of
        # the database's group, never an input of the instance); the proxy itself is declared in declare_pooler.
        self._proxy_network: tuple[list[str], pulumi.Output[str]] | None = None
        if settings.aws.proxy:
            proxy_group = ec2.SecurityGroup(
                f"{name}-proxy-sg",
                description=f"gaia-db {env}: RDS Proxy, PostgreSQL from allowed networks only",
                vpc_id=vpc_id,
                ingress=[ec2.SecurityGroupIngressArgs(description="PostgreSQL", protocol="tcp", from_port=PORT,
                                                      to_port=PORT, cidr_blocks=cidrs,
                                                      security_groups=list(allowed_groups))],
                egress=[ec2.SecurityGroupEgressArgs(description="PostgreSQL in the VPC", protocol="tcp",
                                                    from_port=PORT, to_port=PORT, cidr_blocks=[vpc.cidr_block])],
                tags=settings.resource_tags,
                opts=child,
            )
            self._proxy_network = (subnet_ids, proxy_group.id)
            allowed_groups.append(proxy_group.id)
        security_group = ec2.SecurityGroup(
            f"{name}-sg",
            description=f"gaia-db {env}: PostgreSQL from allowed networks only",
            vpc_id=vpc_id,
            ingress=[
                ec2.SecurityGroupIngressArgs(
                    description="PostgreSQL",
                    protocol="tcp",
                    from_port=PORT,
                    to_port=PORT,
                    cidr_blocks=cidrs,
                    security_groups=allowed_groups,
                )
            ],
            tags=settings.resource_tags,
            opts=child,
        )
        # The smallest class meeting the size with room for every pool at its peak (settings checked it exists).
        instance_class = rds_class(settings.size, production=settings.is_prod,
                                   connections=settings.pool.connections_needed)
        # Explicit, so the connection budget (README) holds whatever RDS's default formula does; static parameter.
        max_connections = max_connections_for(instance_class.memory_mb)
        self._max_connections = max_connections
        parameter_group = rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{settings.major_version}",
            description=f"gaia-db {env}: TLS only, pg_stat_statements, slow-query log",
            parameters=[
                rds.ParameterGroupParameterArgs(name=key, value=value, apply_method=method)
                for key, value, method in [*PARAMETERS, ("max_connections", str(max_connections), "pending-reboot")]
            ],
            tags=settings.resource_tags,
            opts=child,
        )

        # RDS for PostgreSQL on gp3 starts at 20 GiB; the dev tier's 10 GB is rounded up to it.
        storage = max(settings.size.storage_gb, MIN_STORAGE_GB)
        # Storage autoscaling up to twice the allocation, at least 10 % above it (AWS's rule), never above RDS's
        # 64 TiB; 0 turns autoscaling off where no such ceiling exists. The provider suppresses the diff of an
        # autoscaled allocated_storage while autoscaling is on (instance.go, allocated_storage DiffSuppressFunc).
        ceiling = storage_ceiling_gb(storage, MAX_STORAGE_GB)
        tags = settings.resource_tags
        options = settings.aws
        replica_ids = [names.replica_name(identifier, index) for index in range(1, settings.read_replicas + 1)]
        # The log groups RDS would create for the exported logs never expire: declared first, with a retention
        # (terraform-aws-rds create_cloudwatch_log_group / cloudwatch_log_group_retention_in_days).
        log_groups = {
            instance: [
                cloudwatch.LogGroup(
                    f"{name}-logs-{instance.removeprefix(identifier + '-') if instance != identifier else 'primary'}"
                    f"-{log}",
                    name=f"/aws/rds/instance/{instance}/{log}",
                    retention_in_days=options.log_retention_days,
                    tags=tags,
                    opts=child,
                )
                for log in LOG_EXPORTS
            ]
            for instance in [identifier, *replica_ids]
        }
        monitoring_role: iam.Role | None = None
        if options.monitoring_interval:
            monitoring_role = iam.Role(
                f"{name}-monitoring",
                description=f"gaia-db {env}: RDS Enhanced Monitoring publishes OS metrics to CloudWatch Logs",
                assume_role_policy=json.dumps({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                   "Principal": {"Service": MONITORING_SERVICE}}],
                }),
                tags=tags,
                opts=child,
            )
            iam.RolePolicyAttachment(
                f"{name}-monitoring", role=monitoring_role.name, policy_arn=MONITORING_POLICY_ARN,
                opts=pulumi.ResourceOptions(parent=monitoring_role),
            )
        insights_days = options.performance_insights_retention_days
        common: dict[str, Any] = dict(
            instance_class=instance_class.name,
            storage_type="gp3",
            max_allocated_storage=ceiling or 0,
            publicly_accessible=False,
            vpc_security_group_ids=[security_group.id],
            parameter_group_name=parameter_group.name,
            port=PORT,
            # Only ever exercised by raising gaia-db:majorVersion (the engine_version below never moves otherwise).
            allow_major_version_upgrade=True,
            auto_minor_version_upgrade=True,
            deletion_protection=settings.is_prod,
            # Pinned: RDS would otherwise move a new instance to whatever CA is its default that day.
            ca_cert_identifier=options.ca_cert_identifier,
            iam_database_authentication_enabled=options.iam_auth,
            performance_insights_enabled=insights_days > 0,
            performance_insights_retention_period=insights_days or None,
            performance_insights_kms_key_id=options.kms_key_id if insights_days else None,
            monitoring_interval=options.monitoring_interval,
            monitoring_role_arn=monitoring_role.arn if monitoring_role is not None else None,
            enabled_cloudwatch_logs_exports=LOG_EXPORTS,
            maintenance_window=MAINTENANCE_WINDOW,
            copy_tags_to_snapshot=True,
            tags=tags,
        )
        primary_inputs: dict[str, Any] = dict(
            identifier=identifier,
            engine="postgres",
            db_name=settings.database_name,
            username=settings.aws.master_username,
            storage_encrypted=settings.aws.storage_encrypted,
        )
        if options.kms_key_id is not None:
            # ForceNew: setting it on an existing instance replaces it (README, docs/RUNBOOK.md "customer-managed key").
            primary_inputs["kms_key_id"] = options.kms_key_id

        final_snapshot: pulumi.Input[str] | None = None
        if env != "dev":
            # One suffix per instance generation: the RandomId is replaced whenever an input that replaces the
            # instance changes, so the replaced instance's final snapshot and the next one's never share a name.
            suffix = random.RandomId(
                f"{name}-final-snapshot", byte_length=4,
                keepers={key: str(primary_inputs[key]) for key in (*REPLACING_INPUTS, "kms_key_id")
                         if key in primary_inputs},
                opts=child,
            )
            final_snapshot = suffix.hex.apply(lambda hex_id: f"{identifier}-final-{hex_id}")

        self.primary = rds.Instance(
            names.child_name(name, "primary"),
            engine_version=str(settings.major_version),
            # Disabled: RDS upgrades the major version itself when its standard support ends. Enabled: RDS Extended
            # Support keeps it, for a charge per vCPU-hour, until the upgrade is made here (docs/RUNBOOK.md).
            engine_lifecycle_support=options.engine_lifecycle_support,
            password=admin_password,
            allocated_storage=storage,
            db_subnet_group_name=subnet_group.name if subnet_group else settings.aws.subnet_group_name,
            multi_az=settings.is_prod,
            backup_retention_period=settings.backup_retention_days,
            backup_window=BACKUP_WINDOW,
            skip_final_snapshot=final_snapshot is None,
            final_snapshot_identifier=final_snapshot,
            **primary_inputs,
            **common,
            opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(depends_on=log_groups[identifier])),
        )
        self.replicas = [
            rds.Instance(
                names.replica_name(name, index),
                identifier=replica_id,
                replicate_source_db=self.primary.identifier,
                storage_encrypted=settings.aws.storage_encrypted,  # as its source's, which RDS requires
                skip_final_snapshot=True,  # a replica's data is the primary's
                **common,
                opts=pulumi.ResourceOptions.merge(stateful, pulumi.ResourceOptions(depends_on=log_groups[replica_id])),
            )
            for index, replica_id in enumerate(replica_ids, start=1)
        ]
        if options.alarm_topic_arn is not None:
            self._alarms(name, settings, options.alarm_topic_arn, identifier, replica_ids, storage, max_connections)

        # The pinned CA's regional root, fetched from AWS's trust store once the primary (and so its region) exists:
        # at `up`, never at preview (components/scripts/aws/ca-bundle.sh, docs/tls.md). Re-run only when the endpoint
        # or the identifier changes, so the trust anchor in the state is the one the services were given.
        self.ca_bundle = command.Command(
            f"{name}-ca-bundle",
            create=load("aws/ca-bundle.sh"),
            update=load("aws/ca-bundle.sh"),
            environment={
                "GAIA_RDS_ENDPOINT": self.primary.address,
                "GAIA_RDS_CA_IDENTIFIER": options.ca_cert_identifier,
                "GAIA_RDS_CA_KIND": RDS_CA_KINDS[options.ca_cert_identifier],
                "GAIA_RDS_TRUSTSTORE": RDS_TRUSTSTORE,
            },
            interpreter=INTERPRETER,
            logging=command.Logging.STDERR,
            add_previous_output_in_env=False,
            opts=child,
        )

        self.host = self.primary.address
        self.port = self.primary.port
        self.database_name = self.primary.db_name.apply(lambda db: db or settings.database_name)
        self.admin_user = self.primary.username
        self.readers = pulumi.Output.all(*[[r.address, r.port] for r in self.replicas]).apply(_host_ports)
        # rds.force_ssl=1 refuses plaintext; the endpoint is in the certificate RDS issues, so the host is verified too.
        self.sslmode = "verify-full"
        self.ca_certificate = pulumi.Output.unsecret(self.ca_bundle.stdout.apply(pem_certificates))
        self.release_dependencies = [self.primary, *self.replicas, self.ca_bundle]

    def declare_pooler(self, name: str, settings: Settings, logins: Mapping[str, pulumi.Output[str]]) -> None:
        """issue 19: RDS Proxy in front of the primary (it cannot front RDS read replicas: a proxy's targets are one
        instance or cluster, and a read replica is neither a target nor reachable through the proxy's endpoints).

        It logs in to the database with one Secrets Manager secret per service login (both logins of each service,
        so a credentialsVersion bump never fails a login through the proxy), readable by the proxy's role alone;
        clients authenticate with SCRAM and TLS is required. The publish work's secrets are not shared: they hold a
        service's URL (the active login only) where RDS Proxy needs {username, password} per login.
        """
        if self._proxy_network is None:
            return
        assert settings.aws is not None
        subnet_ids, group_id = self._proxy_network
        env = settings.environment
        tags = settings.resource_tags
        child = pulumi.ResourceOptions(parent=self)
        identifier = settings.aws.identifier
        secrets: list[secretsmanager.Secret] = []
        for login, password in logins.items():
            secret = secretsmanager.Secret(
                f"{name}-proxy-{login}",
                name_prefix=f"{identifier}/proxy/{login}-",
                description=f"gaia-db {env}: the {login} login, for RDS Proxy only",
                kms_key_id=settings.aws.kms_key_id,
                recovery_window_in_days=30 if settings.is_prod else 7,
                tags=tags,
                opts=child,
            )
            secretsmanager.SecretVersion(
                f"{name}-proxy-{login}",
                secret_id=secret.id,
                secret_string=_login_secret(login, password),
                opts=pulumi.ResourceOptions(parent=secret),
            )
            secrets.append(secret)
        role = iam.Role(
            f"{name}-proxy",
            description=f"gaia-db {env}: RDS Proxy reads the service logins' secrets",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": PROXY_SERVICE}}],
            }),
            tags=tags,
            opts=child,
        )
        iam.RolePolicy(
            f"{name}-proxy-secrets",
            role=role.id,
            policy=pulumi.Output.all(*[secret.arn for secret in secrets]).apply(
                lambda arns: proxy_policy(arns, settings.aws.kms_key_id if settings.aws else None)),
            opts=pulumi.ResourceOptions(parent=role),
        )
        proxy = rds.Proxy(
            f"{name}-proxy",
            name=f"{identifier}-proxy",
            engine_family="POSTGRESQL",
            require_tls=True,
            role_arn=role.arn,
            vpc_subnet_ids=subnet_ids,
            vpc_security_group_ids=[group_id],
            idle_client_timeout=PROXY_IDLE_CLIENT_SECONDS,
            auths=[rds.ProxyAuthArgs(auth_scheme="SECRETS", secret_arn=secret.arn, iam_auth="DISABLED",
                                     client_password_auth_type="POSTGRES_SCRAM_SHA_256", description=name_)  # noqa: S106
                   for secret, name_ in zip(secrets, logins, strict=True)],
            tags=tags,
            opts=child,
        )
        # The proxy may take what the budget leaves: the release's 2 and the 10 reserved stay direct.
        reserved = RELEASE_CONNECTIONS + RESERVED_CONNECTIONS
        group = rds.ProxyDefaultTargetGroup(
            f"{name}-proxy",
            db_proxy_name=proxy.name,
            connection_pool_config=rds.ProxyDefaultTargetGroupConnectionPoolConfigArgs(
                max_connections_percent=(self._max_connections - reserved) * 100 // self._max_connections,
                connection_borrow_timeout=120,
            ),
            opts=pulumi.ResourceOptions(parent=proxy),
        )
        rds.ProxyTarget(
            f"{name}-proxy-primary",
            db_proxy_name=proxy.name,
            target_group_name=group.name,
            db_instance_identifier=self.primary.identifier,
            opts=pulumi.ResourceOptions(parent=proxy),
        )
        self.pooler = proxy.endpoint.apply(lambda host: HostPort(host=host, port=PORT))
        # The proxy's certificate is ACM's, chaining to Amazon Root CA 1-4 in the system trust store (docs/tls.md).
        self.pooler_sslrootcert = "system"

    def _alarms(self, name: str, settings: Settings, topic: str, identifier: str, replica_ids: list[str],
                storage_gb: int, max_connections: int) -> None:
        """CloudWatch alarms on what pages a database owner, and RDS events (failed backups), to the SNS topic."""
        child = pulumi.ResourceOptions(parent=self)
        tags = settings.resource_tags
        checks: list[tuple[str, str, str, str, float]] = []  # (instance, short name, metric, comparison, threshold)
        for instance in [identifier, *replica_ids]:
            checks += [
                (instance, "free-storage", "FreeStorageSpace", "LessThanThreshold",
                 FREE_STORAGE_FRACTION * storage_gb * GIB),
                (instance, "transaction-ids", "MaximumUsedTransactionIDs", "GreaterThanThreshold",
                 MAX_USED_TRANSACTION_IDS),
                (instance, "connections", "DatabaseConnections", "GreaterThanThreshold",
                 float(int(CONNECTIONS_FRACTION * max_connections))),
            ]
        checks += [(replica, "replica-lag", "ReplicaLag", "GreaterThanThreshold", REPLICA_LAG_SECONDS)
                   for replica in replica_ids]
        for instance, short, metric, comparison, threshold in checks:
            cloudwatch.MetricAlarm(
                f"{name}-alarm-{instance}-{short}",
                name=f"{instance}-{short}",
                alarm_description=f"gaia-db {settings.environment}: {metric} of {instance} "
                                  f"{'below' if comparison.startswith('Less') else 'above'} {threshold:g}",
                namespace="AWS/RDS",
                metric_name=metric,
                dimensions={"DBInstanceIdentifier": instance},
                statistic="Minimum" if comparison.startswith("Less") else "Maximum",
                period=300,
                evaluation_periods=1 if short == "transaction-ids" else 3,
                comparison_operator=comparison,
                threshold=threshold,
                treat_missing_data="missing",
                alarm_actions=[topic],
                ok_actions=[topic],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.primary, *self.replicas]),
            )
        rds.EventSubscription(
            f"{name}-events",
            name=f"{identifier}-events",
            sns_topic=topic,
            source_type="db-instance",
            source_ids=[identifier, *replica_ids],
            event_categories=EVENT_CATEGORIES,
            tags=tags,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.primary, *self.replicas])),
        )


    def _bastion(self, name: str, settings: Settings, vpc_id: str, vpc_cidr: str,
                 subnet_ids: list[str]) -> pulumi.Output[str]:
        """The SSM bastion (aws.bastion): a tiny instance in the database's subnets with the SSM agent, no inbound
        rule and no key pair; `aws ssm start-session` forwards a local port through it to the database
        (README "Reaching the database"). Returns its security group's id for the database's ingress."""
        assert settings.aws is not None and settings.aws.bastion is not None
        bastion = settings.aws.bastion
        env = settings.environment
        tags = settings.resource_tags
        child = pulumi.ResourceOptions(parent=self)
        group = ec2.SecurityGroup(
            f"{name}-bastion-sg",
            description=f"gaia-db {env}: the SSM bastion, no inbound rule",
            vpc_id=vpc_id,
            ingress=[],
            egress=[
                # The SSM agent dials out to the Systems Manager endpoints (through a NAT gateway or the VPC's
                # interface endpoints); the forwarded session goes on to PostgreSQL inside the VPC.
                ec2.SecurityGroupEgressArgs(description="HTTPS to Systems Manager", protocol="tcp", from_port=443,
                                            to_port=443, cidr_blocks=["0.0.0.0/0"]),
                ec2.SecurityGroupEgressArgs(description="PostgreSQL in the VPC", protocol="tcp", from_port=PORT,
                                            to_port=PORT, cidr_blocks=[vpc_cidr]),
            ],
            tags=tags,
            opts=child,
        )
        role = iam.Role(
            f"{name}-bastion",
            description=f"gaia-db {env}: the SSM bastion's instance role (Session Manager only)",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                               "Principal": {"Service": BASTION_SERVICE}}],
            }),
            tags=tags,
            opts=child,
        )
        iam.RolePolicyAttachment(f"{name}-bastion-ssm", role=role.name, policy_arn=SSM_CORE_POLICY_ARN,
                                 opts=pulumi.ResourceOptions(parent=role))
        profile = iam.InstanceProfile(f"{name}-bastion", role=role.name, tags=tags,
                                      opts=pulumi.ResourceOptions(parent=role))
        ec2.Instance(
            f"{name}-bastion",
            ami=BASTION_AMI.format(architecture=bastion.architecture),
            instance_type=bastion.instance_type,
            subnet_id=bastion.subnet_id or subnet_ids[0],
            vpc_security_group_ids=[group.id],
            iam_instance_profile=profile.name,
            metadata_options=ec2.InstanceMetadataOptionsArgs(http_tokens="required", http_endpoint="enabled"),
            root_block_device=ec2.InstanceRootBlockDeviceArgs(encrypted=True, volume_type="gp3"),
            tags={**tags, "Name": f"{settings.aws.identifier}-bastion"},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["ami"]),
        )
        return group.id


def _login_secret(login: str, password: pulumi.Output[str]) -> pulumi.Output[str]:
    """RDS Proxy's secret format: {"username", "password"} (RDS User Guide, "Setting up database credentials")."""

    def value(pw: str) -> str:
        return json.dumps({"password": pw, "username": login}, sort_keys=True)

    hidden: pulumi.Output[str] = pulumi.Output.secret(password.apply(value))
    return hidden


def proxy_policy(secret_arns: list[str], kms_key_id: str | None) -> str:
    """RDS Proxy's role: read exactly the service logins' secrets (and decrypt them with the stack's key)."""
    statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                                         "Resource": sorted(secret_arns)}]
    if kms_key_id is not None:
        statements.append({"Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": kms_key_id})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _host_ports(pairs: list[list[object]]) -> list[HostPort]:
    return [{"host": str(host), "port": int(str(port))} for host, port in pairs]
