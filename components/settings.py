"""The stack's configuration: the documented tiers as data, and the `gaia-db:` config contract, validated.

Every invalid value fails here, before any resource is declared, with one sentence naming the key, the value and
what is allowed. `parse_settings` is pure (a dict in, `Settings` out) so every rule is testable without an engine;
`load_settings` only gathers the raw values from Pulumi config.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import pulumi
from pulumi.runtime import config as runtime_config

from components import sizing
from components.sizing import Size
from dbops import names
from dbops.urls import SSLMODES

if TYPE_CHECKING:
    from components.publish_settings import PublishSettings

Provider = Literal["fly", "aws", "gcp", "local"]
Environment = Literal["dev", "staging", "prod"]
FlyFlavor = Literal["postgres", "mpg"]

PROVIDERS = cast(tuple[Provider, ...], names.PROVIDERS)
ENVIRONMENTS = cast(tuple[Environment, ...], names.ENVIRONMENTS)
FLY_FLAVORS: tuple[FlyFlavor, ...] = ("postgres", "mpg")

MAX_READ_REPLICAS = 5
RETENTION_DAYS = (1, 35)
CPU_RANGE = (1, 96)
MEMORY_MB_RANGE = (256, 786_432)  # 768 GB: the largest class any of the three clouds offers
STORAGE_GB_RANGE = (10, 65_536)  # RDS's 64 TiB ceiling
POOL_SIZE_RANGE = (1, 500)
POOL_OVERFLOW_RANGE = (0, 1000)
POOL_INSTANCES_RANGE = (1, 100)  # how many instances (processes, machines) of each service hold a pool
GCP_PRIVATE_SERVICES_ACCESS = ("create", "existing")
DEFAULT_LOCAL_PORT = 54320  # clear of a system PostgreSQL on 5432
# issue 19: PgBouncer listens beside the primary, above the ports the replicas may take (local.port + 1..5).
LOCAL_POOLER_OFFSET = 10
# flyctl refuses WAL backups on machines under 512 MB (flypg/launcher.go, internal/command/postgres/postgres.go).
FLY_WAL_BACKUP_MIN_MEMORY_MB = 512

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{DOMAIN_LABEL}(?:\.{DOMAIN_LABEL})+$")
FLY_REGION = re.compile(r"^[a-z]{3}$")
FLY_ORG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
FLY_APP_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
# What both AWS tags and Cloud SQL user labels accept (labels are the stricter: lower case, at most 63 characters).
TAG_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TAG_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
RESERVED_TAGS = ("project", "environment", "managed-by")
MAX_TAGS = 40
# Override keys for an adopted RDS / Cloud SQL instance (docs/RUNBOOK.md §8). Instance names leave room for the
# replicas' `-replica-N` under RDS's 63 characters.
MAX_INSTANCE_NAME = 53
RDS_IDENTIFIER = re.compile(rf"^(?=.{{1,{MAX_INSTANCE_NAME}}}$)[a-z](?:-?[a-z0-9])*$")
CLOUDSQL_INSTANCE = re.compile(rf"^(?=.{{1,{MAX_INSTANCE_NAME}}}$)[a-z](?:[a-z0-9-]*[a-z0-9])?$")
MASTER_USERNAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RDS_SUBNET_GROUP = re.compile(r"^[a-z0-9][a-z0-9 ._-]{0,254}$")
AWS_ADOPTION_FIELDS = ("identifier", "masterUsername", "storageEncrypted", "subnetGroupName")
GCP_ADOPTION_FIELDS = ("instanceName", "adminUser")

# --- issue 11: the cloud options experienced RDS / Cloud SQL users expect (README's config table, docs/RUNBOOK.md) ---
# The PostgreSQL major version both clouds run; raising it is an in-place upgrade (docs/RUNBOOK.md §major upgrades).
MAJOR_VERSIONS = (14, 15, 16, 17)
DEFAULT_MAJOR_VERSION = 16
# RDS: pulumi_aws.rds.Instance engine_lifecycle_support (its doc: "Valid values are open-source-rds-extended-support,
# open-source-rds-extended-support-disabled"). Extended support: RDS keeps the major version past the end of
# standard support, for a charge; disabled: RDS upgrades the major version itself when standard support ends.
ENGINE_LIFECYCLE = ("open-source-rds-extended-support", "open-source-rds-extended-support-disabled")
DEFAULT_ENGINE_LIFECYCLE: dict[Environment, str] = {
    "dev": "open-source-rds-extended-support-disabled",
    "staging": "open-source-rds-extended-support-disabled",
    "prod": "open-source-rds-extended-support",  # prod's major version never changes by surprise
}
# The RDS CAs (RDS User Guide, "Certificate authorities"); rds-ca-rsa2048-g1 is AWS's default for new instances.
CA_CERT_IDENTIFIERS = ("rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1")
DEFAULT_CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"
# Performance Insights retention (pulumi_aws.rds.Instance performance_insights_retention_period: 7, 731 or a
# multiple of 31); 0 is off. terraform-aws-rds defaults the retention to 7 (the free tier).
PERFORMANCE_INSIGHTS_DAYS = (0, 7, *range(31, 731, 31), 731)
DEFAULT_PERFORMANCE_INSIGHTS_DAYS: dict[Environment, int] = {"dev": 0, "staging": 0, "prod": 7}
# Enhanced Monitoring interval in seconds (terraform-aws-rds monitoring_interval: 0, 1, 5, 10, 15, 30, 60; 0 is off).
MONITORING_INTERVALS = (0, 1, 5, 10, 15, 30, 60)
DEFAULT_MONITORING_INTERVAL: dict[Environment, int] = {"dev": 0, "staging": 0, "prod": 60}
# CloudWatch Logs retention values (PutRetentionPolicy); terraform-aws-rds cloudwatch_log_group_retention_in_days = 7.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                      3288, 3653)
DEFAULT_LOG_RETENTION_DAYS: dict[Environment, int] = {"dev": 7, "staging": 7, "prod": 30}
KMS_KEY_ARN = re.compile(
    r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key/[0-9a-f-]{36}|key/mrk-[0-9a-f]{32}|alias/[A-Za-z0-9/_-]+)$"
)
SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
GCP_KMS_KEY = re.compile(r"^projects/[^/]+/locations/[a-z0-9-]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
GCP_NOTIFICATION_CHANNEL = re.compile(r"^projects/[^/]+/notificationChannels/[0-9]+$")
AWS_FIELDS = ("vpcId", "subnetIds", "allowedCidrs", "allowedSecurityGroupIds", "iamAuth", "kmsKeyId",
              "engineLifecycleSupport", "caCertIdentifier", "performanceInsightsRetentionDays", "monitoringInterval",
              "logRetentionDays", "alarmTopicArn", "bastion", "proxy", *AWS_ADOPTION_FIELDS)
# issue 21: the SSM bastion the release's tunnel goes through (aws.bastion). Graviton families (a `g` after the
# generation: t4g, m7g, c6gn) run the arm64 image, the others x86_64.
BASTION_INSTANCE_TYPE = re.compile(r"^[a-z]+[0-9]+[a-z-]*\.[a-z0-9]+$")
DEFAULT_BASTION_INSTANCE_TYPE = "t4g.nano"
GCP_FIELDS = ("privateNetwork", "allowPublicIp", "privateServicesAccess", "iamAuth", "encryptionKeyName",
              "queryInsights", "replicaZones", "notificationChannels", *GCP_ADOPTION_FIELDS)


class SettingsError(pulumi.RunError):
    """An invalid config value; Pulumi prints the message alone, without a traceback."""


@dataclass(frozen=True)
class Pool:
    size: int
    max_overflow: int
    instances: int = 1  # of each service, each with its own pool

    @property
    def connections_needed(self) -> int:
        """Server connections at peak: every service's pool full on every instance, the release, reserved slots."""
        return sizing.connections_needed(self.size, self.max_overflow, self.instances)


@dataclass(frozen=True)
class Tier:
    size: Size
    read_replicas: int
    backup_retention_days: int
    point_in_time_recovery: bool  # WAL-based PITR; dev keeps daily snapshots only
    pool: Pool


# The seed's "Scaling Strategies", "Point-in-Time Recovery" and config/database.yaml, as data.
TIERS: dict[Environment, Tier] = {
    "dev": Tier(Size(cpus=1, memory_mb=256, storage_gb=10), names.TIER_READ_REPLICAS["dev"], 1, False, Pool(5, 10)),
    "staging": Tier(Size(cpus=2, memory_mb=1024, storage_gb=50), names.TIER_READ_REPLICAS["staging"], 3, True,
                    Pool(10, 20)),
    "prod": Tier(Size(cpus=8, memory_mb=16384, storage_gb=500), names.TIER_READ_REPLICAS["prod"], 7, True,
                 Pool(20, 40)),
}


@dataclass(frozen=True)
class FlySettings:
    org: str
    region: str
    flavor: FlyFlavor
    app_name: str  # global across Fly.io: `gaia-db-<env>` unless fly.appName says otherwise
    # Set by the stack itself rather than taken from the tier: only then may the scripts make a VM smaller or remove
    # a standby (an adopted cluster is never cut down to a tier nobody asked for).
    exact_size: bool
    exact_replicas: bool
    exact_retention: bool  # likewise for shortening the backups an adopted cluster keeps


@dataclass(frozen=True)
class BastionSettings:
    """A tiny instance the release's SSM port forwarding goes through: no inbound rule, the SSM agent only."""

    instance_type: str
    subnet_id: str | None  # None: the first of the database's subnets

    @property
    def architecture(self) -> str:
        family = self.instance_type.split(".")[0]
        return "arm64" if "g" in re.sub(r"^[a-z]+[0-9]+", "", family) else "x86_64"


@dataclass(frozen=True)
class AwsSettings:
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    allowed_cidrs: tuple[str, ...]
    allowed_security_group_ids: tuple[str, ...]
    # An adopted instance's own names and replace-forcing settings (docs/RUNBOOK.md §8); the defaults are a new one's.
    identifier: str = ""  # the RDS instance identifier; parse_settings fills in gaia-<env>
    master_username: str = ""  # parse_settings fills in gaia_<env>
    storage_encrypted: bool = True
    subnet_group_name: str | None = None  # the instance's existing DB subnet group; None: the stack declares one
    # issue 11 (defaults here are the prod-independent ones; parse_settings fills in the tier's)
    iam_auth: bool = False
    kms_key_id: str | None = None  # None: RDS's AWS-managed key aws/rds
    engine_lifecycle_support: str = "open-source-rds-extended-support"
    ca_cert_identifier: str = DEFAULT_CA_CERT_IDENTIFIER
    performance_insights_retention_days: int = 0  # 0: off
    monitoring_interval: int = 0  # seconds; 0: Enhanced Monitoring off
    log_retention_days: int = 7
    alarm_topic_arn: str | None = None  # None: no alarms
    bastion: BastionSettings | None = None  # issue 21: None: no bastion (the release reaches RDS some other way)
    proxy: bool = False  # issue 19: RDS Proxy in front of the primary (poolerUrls); opt-in, it is billed per vCPU


@dataclass(frozen=True)
class GcpSettings:
    project: str
    region: str
    private_network: str | None
    # Without a private network, prod refuses an instance reachable only through its public IP unless this is set.
    allow_public_ip: bool = False
    # "create": declare the VPC's private services access (a reserved range + the peering); "existing": it is there.
    private_services_access: str = "create"
    # An adopted instance's own names (docs/RUNBOOK.md §8); parse_settings fills in gaia-<env> and gaia_<env>.
    instance_name: str = ""
    admin_user: str = ""
    # issue 11
    iam_auth: bool = False
    encryption_key_name: str | None = None  # None: Google-managed encryption
    query_insights: bool = True
    replica_zones: tuple[str, ...] = ()  # replica i goes to replica_zones[i % len]; empty: Cloud SQL chooses
    notification_channels: tuple[str, ...] = ()  # empty: no alert policies


@dataclass(frozen=True)
class LocalSettings:
    port: int
    data_dir: str
    pooler_port: int = DEFAULT_LOCAL_PORT + LOCAL_POOLER_OFFSET  # issue 19: PgBouncer (poolerUrls)


@dataclass(frozen=True)
class ReleaseTunnel:
    """Where the deployer reaches the database when its own address is private (fly proxy, SSM, Auth Proxy)."""

    host: str
    port: int
    sslmode: str | None  # None: the cluster's own sslmode


@dataclass(frozen=True)
class Settings:
    stack: str
    provider: Provider
    environment: Environment
    admin_email: str
    size: Size
    read_replicas: int
    backup_retention_days: int
    point_in_time_recovery: bool
    pool: Pool
    database_name: str
    admin_key_version: int
    fly: FlySettings | None = None
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    local: LocalSettings | None = None
    # Secrets stay Outputs from the moment they are read.
    fly_api_token: pulumi.Output[str] | None = None
    # The admin password of an existing database the stack adopts; None: the stack generates one.
    admin_password: pulumi.Output[str] | None = None
    release_tunnel: ReleaseTunnel | None = None
    # Extra tags (AWS) / user labels (GCP) on every database resource that takes them.
    tags: Mapping[str, str] = field(default_factory=dict)
    # PostgreSQL major version on AWS and GCP (Fly and local run what their image / server binaries carry).
    major_version: int = DEFAULT_MAJOR_VERSION
    # Bump to rotate every service password with alternating logins (odd: gaia_<svc>, even: gaia_<svc>_alt active).
    credentials_version: int = 1
    # Where each service's URL is delivered (components/publish.py); None publishes nothing.
    publish: PublishSettings | None = None

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def protects_data(self) -> bool:
        """Whether the stateful resources (cluster, instances, replicas, database) are `protect`ed: outside dev, an
        `up` that would delete one (a provider switch, a renamed stack) stops instead (docs/RUNBOOK.md §10)."""
        return self.environment != "dev"

    @property
    def resource_tags(self) -> dict[str, str]:
        """The tags (AWS) / labels (GCP) on every resource that takes them: the stack's own, then gaia-db's."""
        return {**self.tags, "project": "gaia-db", "environment": self.environment, "managed-by": "pulumi"}

    @property
    def resource_prefix(self) -> str:
        """`gaia-db-<env>` as in the seed; a local stack is named after the stack so several can coexist."""
        return names.resource_prefix(self.provider, self.environment, self.stack)


# --- value checks: each returns the clean value or raises one sentence naming key, value and what is allowed ---

T = TypeVar("T")


def _fail(key: str, value: Any, allowed: str) -> SettingsError:
    return SettingsError(f"gaia-db:{key} is {json.dumps(value)}, but {allowed}.")


def _string(key: str, value: Any, pattern: re.Pattern[str] | None = None, allowed: str = "it must be a string") -> str:
    if not isinstance(value, str) or not value or (pattern is not None and not pattern.match(value)):
        raise _fail(key, value, allowed)
    return value


def _choice(key: str, value: Any, choices: tuple[T, ...]) -> T:
    if value not in choices:
        raise _fail(key, value, "it must be one of " + ", ".join(map(str, choices)))
    return cast(T, value)


def _int(key: str, value: Any, bounds: tuple[int, int]) -> int:
    low, high = bounds
    # Pulumi config stores scalars as strings, so "3" is as good as 3; booleans and fractions are not integers.
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(key, value, f"it must be an integer from {low} to {high}")
    return value


def _object(key: str, value: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    fields = ", ".join(required + optional)
    if not isinstance(value, dict):
        raise _fail(key, value, f"it must be an object with {fields}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise _fail(key, value, f"{', '.join(unknown)} is not a field of it (allowed: {fields})")
    missing = [name for name in required if name not in value]
    if missing:
        raise _fail(key, value, f"it lacks {', '.join(missing)} (required: {', '.join(required)})")
    return value


def _string_list(key: str, value: Any, check: Callable[[str, Any], str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(key, value, "it must be a list of strings")
    return tuple(check(f"{key}[{i}]", item) for i, item in enumerate(value))


def _cidr(key: str, value: Any) -> str:
    try:
        network = ipaddress.ip_network(_string(key, value), strict=True)
    except ValueError:
        raise _fail(key, value, "it must be a CIDR block such as 10.0.0.0/16") from None
    if network.prefixlen == 0:
        raise _fail(key, value, "the database is never open to the whole internet; name the networks that need it")
    return str(network)


def _aws_id(kind: str) -> Callable[[str, Any], str]:
    pattern = re.compile(rf"^{kind}-[0-9a-f]{{8,17}}$")
    return lambda key, value: _string(key, value, pattern, f"it must be an AWS id such as {kind}-0123abcd")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, bool):
        raise _fail(key, value, "it must be true or false")
    return value


def _email(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 255 or not EMAIL.match(value):
        raise _fail(key, value, "it must be an e-mail address such as admin@dev.gaia.com (at most 255 characters)")
    return value


# --- the contract ---

KNOWN_KEYS = (
    "provider", "environment", "adminEmail", "size", "readReplicas", "backupRetentionDays", "pool", "databaseName",
    "fly", "flyApiToken", "aws", "gcp", "local", "adminKeyVersion", "releaseUrl", "tags", "adminPassword",
    "majorVersion", "credentialsVersion", "publish",
)


def parse_settings(
    raw: Mapping[str, Any],
    *,
    stack: str,
    fly_api_token: pulumi.Output[str] | None = None,
    admin_password: pulumi.Output[str] | None = None,
    gcp_project: str | None = None,
    gcp_region: str | None = None,
) -> Settings:
    """Validate the `gaia-db:` config (secrets excluded: they arrive as Outputs) into `Settings`."""
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        raise SettingsError(
            f"gaia-db:{unknown[0]} is not a gaia-db setting; the settings are {', '.join(KNOWN_KEYS)}."
        )
    if "provider" not in raw:
        raise SettingsError(f"gaia-db:provider is not set; set it to one of {', '.join(PROVIDERS)}.")
    provider = _choice("provider", raw["provider"], PROVIDERS)

    if "environment" in raw:
        environment = _choice("environment", raw["environment"], ENVIRONMENTS)
    elif stack in ENVIRONMENTS:
        environment = stack
    else:
        raise SettingsError(
            f"gaia-db:environment is not set and the stack name {json.dumps(stack)} is not an environment; "
            f"set it to one of {', '.join(ENVIRONMENTS)}."
        )
    tier = TIERS[environment]

    if "adminEmail" not in raw:
        raise SettingsError("gaia-db:adminEmail is not set; set it to the platform admin's e-mail address.")
    admin_email = _email("adminEmail", raw["adminEmail"])

    size = tier.size
    if "size" in raw:
        obj = _object("size", raw["size"], ("cpus", "memoryMb", "storageGb"))
        size = Size(
            cpus=_int("size.cpus", obj["cpus"], CPU_RANGE),
            memory_mb=_int("size.memoryMb", obj["memoryMb"], MEMORY_MB_RANGE),
            storage_gb=_int("size.storageGb", obj["storageGb"], STORAGE_GB_RANGE),
        )

    pool = tier.pool
    if "pool" in raw:
        obj = _object("pool", raw["pool"], ("size", "maxOverflow"), ("instances",))
        pool = Pool(_int("pool.size", obj["size"], POOL_SIZE_RANGE),
                    _int("pool.maxOverflow", obj["maxOverflow"], POOL_OVERFLOW_RANGE),
                    _int("pool.instances", obj.get("instances", 1), POOL_INSTANCES_RANGE))

    read_replicas = _int("readReplicas", raw.get("readReplicas", tier.read_replicas), (0, MAX_READ_REPLICAS))
    retention = _int("backupRetentionDays", raw.get("backupRetentionDays", tier.backup_retention_days), RETENTION_DAYS)
    admin_key_version = _int("adminKeyVersion", raw.get("adminKeyVersion", 1), (1, 1_000_000))
    credentials_version = _int("credentialsVersion", raw.get("credentialsVersion", 1), (1, 1_000_000))
    publish = None
    if raw.get("publish"):
        from components.publish_settings import parse_publish  # its own module; it uses the helpers above

        publish = parse_publish(raw["publish"], environment=environment, gcp_project=gcp_project)

    database_name = _string(
        "databaseName", raw.get("databaseName", names.default_database_name(provider, environment)), IDENTIFIER,
        "it must be a lower-case PostgreSQL identifier (letters, digits, underscores; at most 63 characters)",
    )

    fly = aws = gcp = local = None
    for section in ("fly", "aws", "gcp", "local"):
        if section in raw and section != provider:
            raise _fail(section, raw[section], f"this stack's provider is {provider}; remove the {section} section")

    if provider == "fly":
        obj = _object("fly", raw.get("fly"), ("org",), ("region", "flavor", "appName"))
        fly = FlySettings(
            org=_string("fly.org", obj["org"], FLY_ORG, "it must be a Fly.io organization slug such as personal"),
            region=_string("fly.region", obj.get("region", "lax"), FLY_REGION,
                           "it must be a three-letter Fly.io region code such as lax"),
            flavor=_choice("fly.flavor", obj.get("flavor", "postgres"), FLY_FLAVORS),
            app_name=_string("fly.appName", obj.get("appName", names.cloud_name("fly", environment)), FLY_APP_NAME,
                             "it must be a Fly.io app name: lower-case letters, digits and dashes (2 to 63, starting "
                             "with a letter, not ending with a dash)"),
            exact_size="size" in raw,
            exact_replicas="readReplicas" in raw,
            exact_retention="backupRetentionDays" in raw,
        )
        if fly.flavor == "mpg":
            # `fly mpg create` takes a fixed --plan (no CPU, memory or replica flags), generates the credentials
            # itself and is addressed by cluster id (flyctl internal/command/mpg/create.go): the tiers cannot be
            # honoured through it yet (docs/fly.md).
            raise _fail("fly.flavor", "mpg", "Fly Managed Postgres is not supported yet (its fixed plans cannot "
                        "express the documented sizes and replicas); use flavor postgres, or the aws or gcp provider")
        if tier.point_in_time_recovery and size.memory_mb < FLY_WAL_BACKUP_MIN_MEMORY_MB:
            raise _fail("size.memoryMb", size.memory_mb, f"the {environment} tier keeps WAL backups, which Fly only "
                        f"allows from {FLY_WAL_BACKUP_MIN_MEMORY_MB} MB")
        if fly_api_token is None:
            raise SettingsError(
                "gaia-db:flyApiToken is not set, but a fly stack needs it; "
                "set it with `pulumi config set --secret flyApiToken < token-file`."
            )
    elif provider == "aws":
        obj = _object("aws", raw.get("aws", {}), (), AWS_FIELDS)
        subnet_ids = _string_list("aws.subnetIds", obj.get("subnetIds", []), _aws_id("subnet"))
        vpc_id = _aws_id("vpc")("aws.vpcId", obj["vpcId"]) if "vpcId" in obj else None
        if subnet_ids and vpc_id is None:
            raise _fail("aws.subnetIds", list(subnet_ids), "subnets need their aws.vpcId set too")
        if len(subnet_ids) == 1:
            raise _fail("aws.subnetIds", list(subnet_ids), "an RDS subnet group needs at least two subnets")
        aws = AwsSettings(
            vpc_id=vpc_id,
            subnet_ids=subnet_ids,
            allowed_cidrs=_string_list("aws.allowedCidrs", obj.get("allowedCidrs", []), _cidr),
            allowed_security_group_ids=_string_list(
                "aws.allowedSecurityGroupIds", obj.get("allowedSecurityGroupIds", []), _aws_id("sg")
            ),
            **_aws_options(obj, environment),
            **_aws_adoption(obj, environment, subnet_ids),
            bastion=_bastion(obj.get("bastion", False), subnet_ids),
        )
    elif provider == "gcp":
        obj = _object("gcp", raw.get("gcp", {}), (), GCP_FIELDS)
        network = None
        if "privateNetwork" in obj:
            network = _string("gcp.privateNetwork", obj["privateNetwork"],
                              re.compile(r"^(https://www\.googleapis\.com/compute/v1/)?projects/[^/]+/global/networks/[^/]+$"),
                              "it must be a VPC network path such as projects/my-project/global/networks/default")
        allow_public_ip = _bool("gcp.allowPublicIp", obj.get("allowPublicIp", False))
        access = _choice("gcp.privateServicesAccess", obj.get("privateServicesAccess", "create"),
                         GCP_PRIVATE_SERVICES_ACCESS)
        if "privateServicesAccess" in obj and network is None:
            raise _fail("gcp.privateServicesAccess", access, "it only applies with gcp.privateNetwork set")
        if environment == "prod" and network is None and not allow_public_ip:
            raise SettingsError(
                "gaia-db:gcp.privateNetwork is not set, but a prod instance reachable only through a public IP "
                "needs gcp.allowPublicIp: true (the Auth Proxy / connectors then authorise every connection); "
                "set one of them."
            )
        for key, value in (("gcp:project", gcp_project), ("gcp:region", gcp_region)):
            if not value:
                raise SettingsError(
                    f"{key} is not set, but a gcp stack needs it; set it with `pulumi config set {key} VALUE`."
                )
        assert gcp_project is not None and gcp_region is not None
        gcp = GcpSettings(project=gcp_project, region=gcp_region, private_network=network,
                          allow_public_ip=allow_public_ip, private_services_access=access,
                          **_gcp_options(obj, gcp_region, read_replicas), **_gcp_adoption(obj, environment))
    else:
        obj = _object("local", raw.get("local", {}), (), ("port", "dataDir", "poolerPort"))
        # Replicas listen on the next ports, so they must fit below 65536 too.
        port = _int("local.port", obj.get("port", DEFAULT_LOCAL_PORT), (1024, 65535 - read_replicas))
        pooler_port = _int("local.poolerPort", obj.get("poolerPort", min(port + LOCAL_POOLER_OFFSET, 65535)),
                           (1024, 65535))
        if port <= pooler_port <= port + MAX_READ_REPLICAS:
            raise _fail("local.poolerPort", pooler_port, f"it must differ from the primary's port {port} and the "
                        f"ports its replicas may take ({port + 1} to {port + MAX_READ_REPLICAS})")
        local = LocalSettings(port=port, data_dir=_string("local.dataDir", obj.get("dataDir", f".gaia/{stack}")),
                              pooler_port=pooler_port)

    _check_fits(provider, size, pool, production=environment == "prod", custom_size="size" in raw)

    release_tunnel = _release_tunnel(raw["releaseUrl"]) if "releaseUrl" in raw else None
    tags = _tags(raw.get("tags", {}))
    major_version = _major_version(provider, raw)

    publishes_to_fly = publish is not None and publish.fly is not None
    if provider != "fly" and fly_api_token is not None and not publishes_to_fly:
        raise SettingsError(f"gaia-db:flyApiToken is set, but this stack's provider is {provider}; remove it.")
    if publishes_to_fly and fly_api_token is None:
        raise SettingsError(
            "gaia-db:publish.fly is set, but gaia-db:flyApiToken is not; set a token that may write the apps' "
            "secrets with `pulumi config set --secret flyApiToken < token-file`."
        )

    return Settings(
        stack=stack,
        provider=provider,
        environment=environment,
        admin_email=admin_email,
        size=size,
        read_replicas=read_replicas,
        backup_retention_days=retention,
        point_in_time_recovery=tier.point_in_time_recovery,
        pool=pool,
        database_name=database_name,
        admin_key_version=admin_key_version,
        fly=fly,
        aws=aws,
        gcp=gcp,
        local=local,
        fly_api_token=fly_api_token,
        admin_password=admin_password,
        release_tunnel=release_tunnel,
        tags=tags,
        major_version=major_version,
        credentials_version=credentials_version,
        publish=publish,
    )


def _tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_TAGS:
        raise _fail("tags", value, f"it must be an object of at most {MAX_TAGS} tags, name: value")
    for key, item in value.items():
        if not TAG_KEY.match(key) or key in RESERVED_TAGS:
            raise _fail(f"tags.{key}", item, "a tag name must be lower-case letters, digits, _ or - (at most 63, "
                        f"starting with a letter) and not {' or '.join(RESERVED_TAGS)}, which gaia-db sets")
        if not isinstance(item, str) or not TAG_VALUE.match(item):
            raise _fail(f"tags.{key}", item, "a tag value must be a string of lower-case letters, digits, _ or - "
                        "(at most 63 characters)")
    return dict(value)


def _major_version(provider: Provider, raw: Mapping[str, Any]) -> int:
    if "majorVersion" not in raw:
        return DEFAULT_MAJOR_VERSION
    if provider not in ("aws", "gcp"):
        raise _fail("majorVersion", raw["majorVersion"], f"it applies to aws and gcp only ({provider} runs the "
                    "version its image or server binaries carry); remove it")
    return _choice("majorVersion", _int("majorVersion", raw["majorVersion"], (MAJOR_VERSIONS[0], MAJOR_VERSIONS[-1])),
                   MAJOR_VERSIONS)


def _in(key: str, value: Any, allowed: tuple[int, ...], what: str) -> int:
    number = _int(key, value, (min(allowed), max(allowed)))
    if number not in allowed:
        raise _fail(key, value, what)
    return number


def _aws_options(obj: Mapping[str, Any], environment: Environment) -> dict[str, Any]:
    """aws.{iamAuth, kmsKeyId, engineLifecycleSupport, caCertIdentifier, performanceInsightsRetentionDays,
    monitoringInterval, logRetentionDays, alarmTopicArn}: each checked, each tier's default filled in."""
    return dict(
        iam_auth=_bool("aws.iamAuth", obj.get("iamAuth", False)),
        kms_key_id=_string("aws.kmsKeyId", obj["kmsKeyId"], KMS_KEY_ARN,
                           "it must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) or alias ARN "
                           "(arn:aws:kms:REGION:ACCOUNT:alias/NAME)") if "kmsKeyId" in obj else None,
        engine_lifecycle_support=_choice("aws.engineLifecycleSupport", obj.get(
            "engineLifecycleSupport", DEFAULT_ENGINE_LIFECYCLE[environment]), ENGINE_LIFECYCLE),
        ca_cert_identifier=_choice("aws.caCertIdentifier", obj.get("caCertIdentifier", DEFAULT_CA_CERT_IDENTIFIER),
                                   CA_CERT_IDENTIFIERS),
        performance_insights_retention_days=_in(
            "aws.performanceInsightsRetentionDays",
            obj.get("performanceInsightsRetentionDays", DEFAULT_PERFORMANCE_INSIGHTS_DAYS[environment]),
            PERFORMANCE_INSIGHTS_DAYS, "it must be 0 (off), 7, a multiple of 31 up to 713, or 731"),
        monitoring_interval=_in("aws.monitoringInterval",
                                obj.get("monitoringInterval", DEFAULT_MONITORING_INTERVAL[environment]),
                                MONITORING_INTERVALS, "it must be one of 0 (off), 1, 5, 10, 15, 30, 60 (seconds)"),
        log_retention_days=_in("aws.logRetentionDays", obj.get("logRetentionDays",
                                                               DEFAULT_LOG_RETENTION_DAYS[environment]),
                               LOG_RETENTION_DAYS, "it must be a CloudWatch Logs retention: "
                               + ", ".join(map(str, LOG_RETENTION_DAYS)) + " (days)"),
        proxy=_bool("aws.proxy", obj.get("proxy", False)),
        alarm_topic_arn=_string("aws.alarmTopicArn", obj["alarmTopicArn"], SNS_TOPIC_ARN,
                                "it must be an SNS topic ARN such as arn:aws:sns:us-west-2:123456789012:db-alerts")
        if "alarmTopicArn" in obj else None,
    )


def _bastion(value: Any, subnet_ids: tuple[str, ...]) -> BastionSettings | None:
    """aws.bastion: `true`, or `{instanceType?, subnetId?}`; `false` or unset declares none."""
    if value is True or value == "true":
        value = {}
    if value is False or value == "false":
        return None
    if not isinstance(value, dict):
        raise _fail("aws.bastion", value, "it must be true, false or an object with instanceType, subnetId")
    obj = _object("aws.bastion", value, (), ("instanceType", "subnetId"))
    subnet = _aws_id("subnet")("aws.bastion.subnetId", obj["subnetId"]) if "subnetId" in obj else None
    if subnet is not None and subnet_ids and subnet not in subnet_ids:
        raise _fail("aws.bastion.subnetId", subnet, "it must be one of the database's aws.subnetIds ("
                    + ", ".join(subnet_ids) + ")")
    return BastionSettings(
        instance_type=_string("aws.bastion.instanceType", obj.get("instanceType", DEFAULT_BASTION_INSTANCE_TYPE),
                              BASTION_INSTANCE_TYPE, "it must be an EC2 instance type such as t4g.nano"),
        subnet_id=subnet,
    )


def _gcp_options(obj: Mapping[str, Any], region: str | None, read_replicas: int) -> dict[str, Any]:
    """gcp.{iamAuth, encryptionKeyName, queryInsights, replicaZones, notificationChannels}."""
    zone = re.compile(rf"^{re.escape(region or '')}-[a-z]$")
    zones = _string_list("gcp.replicaZones", obj.get("replicaZones", []), lambda key, value: _string(
        key, value, zone, f"it must be a zone of the region {region}, such as {region}-a"))
    if zones and read_replicas == 0:
        raise _fail("gcp.replicaZones", list(zones), "it only applies with readReplicas above 0")
    key_name = _string(
        "gcp.encryptionKeyName", obj["encryptionKeyName"], GCP_KMS_KEY,
        "it must be a Cloud KMS key such as projects/P/locations/REGION/keyRings/R/cryptoKeys/K",
    ) if "encryptionKeyName" in obj else None
    if key_name is not None and key_name.split("/")[3] != region:
        raise _fail("gcp.encryptionKeyName", key_name, f"Cloud SQL needs a key in the instance's region {region}")
    return dict(
        iam_auth=_bool("gcp.iamAuth", obj.get("iamAuth", False)),
        encryption_key_name=key_name,
        query_insights=_bool("gcp.queryInsights", obj.get("queryInsights", True)),
        replica_zones=zones,
        notification_channels=_string_list(
            "gcp.notificationChannels", obj.get("notificationChannels", []),
            lambda key, value: _string(key, value, GCP_NOTIFICATION_CHANNEL,
                                       "it must be a notification channel such as projects/P/notificationChannels/123"),
        ),
    )


def _aws_adoption(obj: Mapping[str, Any], environment: Environment, subnet_ids: tuple[str, ...]) -> dict[str, Any]:
    """aws.{identifier, masterUsername, storageEncrypted, subnetGroupName}: what an instance made outside the stack
    has, where a difference would replace it (identifier, username, storage_encrypted) or fail the update (RDS
    cannot move an instance to another subnet group in the same VPC)."""
    group = _string("aws.subnetGroupName", obj["subnetGroupName"], RDS_SUBNET_GROUP,
                    "it must be an RDS DB subnet group name (lower-case letters, digits, spaces, periods, underscores "
                    "and dashes, at most 255)") if "subnetGroupName" in obj else None
    if group is not None and subnet_ids:
        raise _fail("aws.subnetGroupName", group, "aws.subnetIds describe the subnet group the stack makes, and with "
                    "aws.subnetGroupName it makes none; remove one of them")
    return dict(
        identifier=_string("aws.identifier", obj.get("identifier", names.cloud_name("aws", environment)),
                           RDS_IDENTIFIER, "it must be an RDS instance identifier: lower-case letters, digits and "
                           f"single dashes, starting with a letter, at most {MAX_INSTANCE_NAME} characters (replicas "
                           "add -replica-N)"),
        master_username=_string("aws.masterUsername", obj.get("masterUsername", names.admin_user(environment)),
                                MASTER_USERNAME, "it must be an RDS master username: a lower-case letter, then "
                                "letters, digits or underscores (at most 63 characters)"),
        storage_encrypted=_bool("aws.storageEncrypted", obj.get("storageEncrypted", True)),
        subnet_group_name=group,
    )


def _gcp_adoption(obj: Mapping[str, Any], environment: Environment) -> dict[str, Any]:
    """gcp.{instanceName, adminUser}: the names of an instance made outside the stack (each replaces what it names)."""
    return dict(
        instance_name=_string("gcp.instanceName", obj.get("instanceName", names.cloud_name("gcp", environment)),
                              CLOUDSQL_INSTANCE, "it must be a Cloud SQL instance name: lower-case letters, digits "
                              f"and dashes, starting with a letter, at most {MAX_INSTANCE_NAME} characters (replicas "
                              "add -replica-N)"),
        admin_user=_string("gcp.adminUser", obj.get("adminUser", names.admin_user(environment)), IDENTIFIER,
                           "it must be a lower-case PostgreSQL identifier (letters, digits, underscores; at most 63 "
                           "characters)"),
    )


def _check_fits(provider: Provider, size: Size, pool: Pool, *, production: bool, custom_size: bool) -> None:
    """The size must map onto a class the provider really has (local runs whatever it is given), and the pools'
    peak connections must fit that class's max_connections (on AWS and GCP the class is chosen to give room)."""
    needed = pool.connections_needed
    choose: dict[Provider, Callable[[], object]] = {
        "aws": lambda: sizing.rds_instance_class(size, production=production, connections=needed),
        "gcp": lambda: sizing.cloudsql_tier(size, connections=needed),
        "fly": lambda: sizing.fly_vm(size, production=production),
        "local": lambda: None,
    }
    try:
        choose[provider]()
    except sizing.SizingError as error:
        if custom_size:
            size_json = {"cpus": size.cpus, "memoryMb": size.memory_mb, "storageGb": size.storage_gb}
            raise _fail("size", size_json, f"{error} on {provider}") from None
        raise _pool_too_big(pool, f"{error} on {provider}") from None


def _pool_too_big(pool: Pool, why: str) -> SettingsError:
    pool_json = {"size": pool.size, "maxOverflow": pool.max_overflow, "instances": pool.instances}
    return _fail("pool", pool_json, f"4 services x {pool.instances} instance(s) x {pool.size + pool.max_overflow} "
                 f"connections + {sizing.RELEASE_CONNECTIONS + sizing.RESERVED_CONNECTIONS} for the release and "
                 f"reserved slots need {pool.connections_needed}, and {why}")


def _release_tunnel(value: Any) -> ReleaseTunnel:
    """`postgresql://127.0.0.1:15432[?sslmode=…]`: only where to connect; the stack supplies login and database."""
    allowed = "it must be postgresql://HOST:PORT (optionally ?sslmode=MODE), without user, password or database"
    # The value is never echoed: a mistaken one may well carry a password.
    hidden = "(not shown)"
    if not isinstance(value, str):
        raise _fail("releaseUrl", hidden, allowed)
    try:
        parts = urlsplit(value)
        port = parts.port
        query = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    except ValueError:
        raise _fail("releaseUrl", hidden, allowed) from None
    if (
        parts.scheme not in ("postgresql", "postgres") or not parts.hostname or port is None
        or parts.username or parts.password or parts.path not in ("", "/") or set(query) - {"sslmode"}
    ):
        raise _fail("releaseUrl", hidden, allowed)
    sslmode = query.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise _fail("releaseUrl", hidden, f"its sslmode must be one of {', '.join(SSLMODES)}")
    return ReleaseTunnel(host=parts.hostname, port=port, sslmode=sslmode)


SECRET_KEYS = ("flyApiToken", "adminPassword")


def _decode(value: str) -> Any:
    """Pulumi hands every config value over as a string; objects, lists and numbers arrive as JSON."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def load_settings() -> Settings:
    """Read the stack's `gaia-db:` (and `gcp:`) config and validate it."""
    config = pulumi.Config("gaia-db")
    raw = {}
    for key in _configured_keys():
        if key not in SECRET_KEYS:
            value = config.get(key)
            if value is not None:
                raw[key] = _decode(value)
    for key in SECRET_KEYS:
        if config.get(key) is not None and not runtime_config.is_config_secret(f"gaia-db:{key}"):
            raise SettingsError(
                f"gaia-db:{key} is stored in plain text in the stack file; remove it and set it encrypted with "
                f"`pulumi config set --secret {key} < file`."
            )
    gcp = pulumi.Config("gcp")
    return parse_settings(
        raw,
        stack=pulumi.get_stack(),
        fly_api_token=config.get_secret("flyApiToken"),
        admin_password=config.get_secret("adminPassword"),
        gcp_project=gcp.get("project"),
        gcp_region=gcp.get("region"),
    )


def _configured_keys() -> list[str]:
    """Every `gaia-db:` key the stack sets, so a misspelt key is reported instead of silently ignored."""
    prefix = "gaia-db:"
    # The CLI hands config over in PULUMI_CONFIG; the SDK's set_all_config (tests, automation) fills CONFIG.
    keys = set(runtime_config.get_config_env()) | set(runtime_config.CONFIG.get())
    return sorted(key[len(prefix):] for key in keys if key.startswith(prefix))
