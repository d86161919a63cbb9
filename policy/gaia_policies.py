"""gaia-db's CrossGuard policies: the database invariants a preview must refuse to break.

Importing this module starts nothing (`policy/__main__.py` builds the `PolicyPack`, which starts a server), so the
tests call the validate functions directly.

Two kinds of policy:

- Resource policies judge one resource's *inputs* before it is created or changed, and need no tier: encryption,
  public reachability, TLS, the pinned Cloud SQL edition, and credentials on command lines.
- Stack policies judge what depends on the environment's tier (`components.settings.TIERS`): backup retention,
  point-in-time recovery, deletion protection and read replicas. The environment is read from the one
  `gaia:Release` resource of the stack (its `environment` input), which every provider's stack declares, which is
  a plain config string (so it is known in every preview), and which is the environment the release really
  deploys. Stack names do not work (a `local` stack deploys `dev`), and tags/labels exist on RDS and Cloud SQL only.
  A stack without exactly one release with a known environment fails `environment-known`, so the tier rules cannot
  be dodged by removing it. Stack policies block a preview (the PR workflow, and `pulumi up`'s own preview); in an
  update they run after the changes, as CrossGuard's stack policies always do.

Values not known during a preview (an output of a resource not yet created) are skipped, never guessed: the
same policies run again with the real values when the update registers the resource.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
    proxy,
)
from pulumi_policy.proxy import UnknownValueError

from components.settings import TIERS, Tier

RDS = "aws:rds/instance:Instance"
RDS_PARAMETERS = "aws:rds/parameterGroup:ParameterGroup"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
CLOUDSQL = "gcp:sql/databaseInstance:DatabaseInstance"
COMMANDS = ("command:local:Command", "command:remote:Command")
RELEASE = "pulumi-python:dynamic/gaia:Release"

STRICT_SSL_MODES = ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED")
PINNED_EDITIONS = ("ENTERPRISE", "ENTERPRISE_PLUS")
# Environment variables of components/fly.py's cluster command and components/local.py's replicas command.
FLY_CLUSTER_SIZE = "GAIA_FLY_CLUSTER_SIZE"
FLY_SNAPSHOT_DAYS = "GAIA_FLY_SNAPSHOT_RETENTION_DAYS"
FLY_RECOVERY_WINDOW = "GAIA_FLY_RECOVERY_WINDOW"
FLY_WAL_BACKUPS = "GAIA_FLY_WAL_BACKUPS"
LOCAL_REPLICAS = "GAIA_REPLICAS"

CREDENTIAL_NAME = r"[A-Za-z0-9_]*(?:PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIAL)[A-Za-z0-9_]*"
IS_CREDENTIAL_NAME = re.compile(rf"^{CREDENTIAL_NAME}$", re.IGNORECASE)
# A literal value where a script should expand a variable ($NAME) or fill a placeholder (%s).
_LITERAL = r"""["']*(?![$%"'])[^\s"';)]+"""
LITERAL_CREDENTIAL = [
    re.compile(rf"\b{CREDENTIAL_NAME}={_LITERAL}", re.IGNORECASE),  # PGPASSWORD=hunter2 psql ...
    re.compile(rf"--(?:password|token|api-key)[= ]{_LITERAL}", re.IGNORECASE),  # fly ... --password hunter2
    re.compile(r"\bPASSWORD\s+'(?![$%'])[^']+'", re.IGNORECASE),  # ALTER ROLE x PASSWORD 'hunter2'
    re.compile(r"://[^\s:/@]+:(?![$%])[^\s@/]+@"),  # postgresql://user:hunter2@host
]
UNKNOWN_SENTINELS = frozenset(getattr(proxy, name) for name in dir(proxy) if name.startswith("UNKNOWN_"))
MIN_SECRET_LENGTH = 6  # shorter values ("1", "dev") would match ordinary script text by chance


class Unknown:
    """A value the engine does not know yet (preview); never a violation by itself."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


def plain(value: Any) -> Any:
    """Props as plain dicts/lists, unknowns as UNKNOWN, without letting CrossGuard's proxy raise mid-policy."""
    if isinstance(value, str):
        return UNKNOWN if value in UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def get(props: Any, *path: str) -> Any:
    """props[path...] or None when a level is missing (UNKNOWN stays UNKNOWN)."""
    for key in path:
        if props is UNKNOWN:
            return UNKNOWN
        if not isinstance(props, Mapping):
            return None
        props = props.get(key)
    return props


def _known(value: Any) -> bool:
    return value is not UNKNOWN


def _is_replica(resource_type: str, props: Mapping[str, Any]) -> bool:
    source = get(props, "replicateSourceDb") if resource_type == RDS else get(props, "masterInstanceName")
    return source is UNKNOWN or bool(source)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- resource policies: one resource's inputs, no tier needed ---


def storage_encrypted(args: ResourceValidationArgs, report: ReportViolation) -> None:
    # Cloud SQL encrypts every instance's storage at rest and its API cannot turn that off: only RDS is checked.
    if args.resource_type != RDS:
        return
    encrypted = get(plain(args.props), "storageEncrypted")
    if _known(encrypted) and encrypted is not True:
        report(f"RDS instance {args.name} must set storageEncrypted=true; unencrypted storage cannot be encrypted "
               "later without a snapshot restore.", None)


def _open_cidrs(blocks: Any) -> list[str]:
    found = []
    for block in blocks or []:
        try:
            if _known(block) and ipaddress.ip_network(str(block), strict=False).prefixlen == 0:
                found.append(str(block))
        except ValueError:
            continue
    return found


def not_publicly_reachable(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = plain(args.props)
    kind = args.resource_type
    if kind == RDS and get(props, "publiclyAccessible") is True:
        report(f"RDS instance {args.name} must set publiclyAccessible=false; reach it from the VPC or a tunnel.", None)
    elif kind == CLOUDSQL:
        networks = get(props, "settings", "ipConfiguration", "authorizedNetworks")
        if _known(networks) and networks:
            values = ", ".join(str(get(n, "value")) for n in networks)
            report(f"Cloud SQL instance {args.name} must have no authorized networks (found {values}); "
                   "connect through a private network or the Cloud SQL Auth Proxy.", None)
    elif kind == SECURITY_GROUP:
        for rule in get(props, "ingress") or []:
            blocks = [*(get(rule, "cidrBlocks") or []), *(get(rule, "ipv6CidrBlocks") or [])]
            for block in _open_cidrs(blocks):
                report(f"security group {args.name} must not admit ingress from {block}; name the networks.", None)
    elif kind == SECURITY_GROUP_RULE and get(props, "type") == "ingress":
        blocks = [*(get(props, "cidrBlocks") or []), *(get(props, "ipv6CidrBlocks") or [])]
        for block in _open_cidrs(blocks):
            report(f"security group rule {args.name} must not admit ingress from {block}; name the networks.", None)
    elif kind == INGRESS_RULE:
        for block in _open_cidrs([get(props, "cidrIpv4"), get(props, "cidrIpv6")]):
            report(f"security group rule {args.name} must not admit ingress from {block}; name the networks.", None)


def ssl_enforced(args: ResourceValidationArgs, report: ReportViolation) -> None:
    props = plain(args.props)
    if args.resource_type == RDS_PARAMETERS and str(get(props, "family") or "").startswith("postgres"):
        values = {get(p, "name"): get(p, "value") for p in get(props, "parameters") or []}
        value = values.get("rds.force_ssl")
        if _known(value) and str(value) != "1":
            report(f"RDS parameter group {args.name} must set rds.force_ssl=1 so the server refuses plaintext.", None)
    elif args.resource_type == RDS:
        group = get(props, "parameterGroupName")
        if _known(group) and (not group or str(group).startswith("default.")):
            report(f"RDS instance {args.name} must use the stack's parameter group (rds.force_ssl=1), "
                   "not the default one.", None)
    elif args.resource_type == CLOUDSQL:
        mode = get(props, "settings", "ipConfiguration", "sslMode")
        if _known(mode) and mode not in STRICT_SSL_MODES:
            report(f"Cloud SQL instance {args.name} must set settings.ipConfiguration.sslMode=ENCRYPTED_ONLY "
                   f"(it is {mode!r}).", None)


def cloudsql_edition_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != CLOUDSQL:
        return
    edition = get(plain(args.props), "settings", "edition")
    if _known(edition) and edition not in PINNED_EDITIONS:
        report(f"Cloud SQL instance {args.name} must pin settings.edition (ENTERPRISE or ENTERPRISE_PLUS); "
               "otherwise Google chooses it and replicas may not match their primary.", None)


def credentials_in_text(text: str, environment: Mapping[str, Any]) -> list[str]:
    """Why `text` (a command line or script) carries a credential: secret values pasted in, or literal passwords."""
    reasons = []
    for name, value in environment.items():
        if (IS_CREDENTIAL_NAME.match(name) and isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
                and value in text):
            reasons.append(f"the value of {name}")
    # Comment lines may describe what not to do (`--password X`); a pasted secret value counts anywhere.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    reasons += [f"a literal credential ({match.group(0).split('=')[0][:24]}...)"
                for pattern in LITERAL_CREDENTIAL for match in pattern.finditer(code)]
    return reasons


def no_credential_in_command_line(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in COMMANDS:
        return
    props = plain(args.props)
    environment = get(props, "environment")
    environment = environment if isinstance(environment, Mapping) else {}
    for field in ("create", "update", "delete"):
        text = get(props, field)
        if isinstance(text, str):
            for reason in credentials_in_text(text, environment):
                report(f"command {args.name} puts {reason} in its {field} text; pass secrets only through "
                       "`environment` and expand them in the script.", None)


# --- stack policies: the tier of the release's environment ---


def release_environments(resources: Iterable[PolicyResource]) -> list[Any]:
    return [get(plain(r.props), "environment") for r in resources if r.resource_type == RELEASE]


def stack_environment(args: StackValidationArgs) -> str | None:
    """The stack's environment, or None when `environment-known` reports why it cannot be found."""
    found = release_environments(args.resources)
    return found[0] if len(found) == 1 and found[0] in TIERS else None


def stack_tier(args: StackValidationArgs) -> Tier | None:
    environment = stack_environment(args)
    return None if environment is None else TIERS[environment]  # type: ignore[index]


def environment_known(args: StackValidationArgs, report: ReportViolation) -> None:
    found = release_environments(args.resources)
    if len(found) != 1:
        report(f"the stack must declare exactly one {RELEASE} resource (found {len(found)}); its environment input "
               "decides which tier the other policies enforce.", None)
    elif found[0] not in TIERS:
        report(f"the release's environment is {found[0]!r}, but the tiers are {', '.join(TIERS)}.", None)


def _fly_cluster(resource: PolicyResource) -> Mapping[str, Any] | None:
    """The environment of the Fly command that owns the cluster: the one whose `delete` destroys the app (the
    password command shares its settings but deletes nothing)."""
    props = plain(resource.props)
    environment = get(props, "environment")
    if (resource.resource_type in COMMANDS and get(props, "delete") and isinstance(environment, Mapping)
            and FLY_CLUSTER_SIZE in environment):
        return environment
    return None


def _days(window: Any) -> int | None:
    match = re.fullmatch(r"(\d+)([dwy])", str(window))
    if match is None:
        return None
    return int(match.group(1)) * {"d": 1, "w": 7, "y": 365}[match.group(2)]


def backups_meet_tier(args: StackValidationArgs, report: ReportViolation) -> None:
    tier = stack_tier(args)
    if tier is None:
        return
    days = tier.backup_retention_days
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == RDS and not _is_replica(RDS, props):
            kept = get(props, "backupRetentionPeriod")
            if _known(kept) and (_int(kept) or 0) < days:
                report(f"RDS instance {r.name} keeps backups {kept} days; the tier needs at least {days}.", r.urn)
        elif r.resource_type == CLOUDSQL and not _is_replica(CLOUDSQL, props):
            backup = get(props, "settings", "backupConfiguration") or {}
            kept = get(backup, "backupRetentionSettings", "retainedBackups")
            logs = get(backup, "transactionLogRetentionDays")
            if get(backup, "enabled") is not True:
                report(f"Cloud SQL instance {r.name} must enable backups (backupConfiguration.enabled).", r.urn)
            if _known(kept) and (_int(kept) or 0) < days:
                report(f"Cloud SQL instance {r.name} keeps {kept} backups; the tier needs at least {days}.", r.urn)
            if tier.point_in_time_recovery and _known(logs) and (_int(logs) or 0) < days:
                report(f"Cloud SQL instance {r.name} keeps {logs} days of logs; the tier needs {days}.", r.urn)
        elif (fly := _fly_cluster(r)) is not None:
            kept = fly.get(FLY_SNAPSHOT_DAYS)
            window = fly.get(FLY_RECOVERY_WINDOW)
            if _known(kept) and (_int(kept) or 0) < days:
                report(f"Fly cluster {r.name} keeps snapshots {kept} days; the tier needs at least {days}.", r.urn)
            if tier.point_in_time_recovery and _known(window) and (_days(window) or 0) < days:
                report(f"Fly cluster {r.name} has a recovery window of {window!r}; the tier needs {days}d.", r.urn)


def pitr_in_staging_and_prod(args: StackValidationArgs, report: ReportViolation) -> None:
    tier = stack_tier(args)
    if tier is None or not tier.point_in_time_recovery:
        return
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == RDS and not _is_replica(RDS, props):
            # RDS's point-in-time recovery is its automated backups: on whenever the retention is at least a day.
            kept = get(props, "backupRetentionPeriod")
            if _known(kept) and (_int(kept) or 0) < 1:
                report(f"RDS instance {r.name} has automated backups off, so no point-in-time recovery.", r.urn)
        elif r.resource_type == CLOUDSQL and not _is_replica(CLOUDSQL, props):
            backup = get(props, "settings", "backupConfiguration") or {}
            if get(backup, "enabled") is not True or get(backup, "pointInTimeRecoveryEnabled") is not True:
                report(f"Cloud SQL instance {r.name} must enable backups with pointInTimeRecoveryEnabled.", r.urn)
        elif (fly := _fly_cluster(r)) is not None and _known(fly.get(FLY_WAL_BACKUPS)):
            if fly.get(FLY_WAL_BACKUPS) != "true":
                report(f"Fly cluster {r.name} must keep WAL backups ({FLY_WAL_BACKUPS}=true).", r.urn)


def deletion_protection_in_prod(args: StackValidationArgs, report: ReportViolation) -> None:
    if stack_environment(args) != "prod":
        return
    for r in args.resources:
        props = plain(r.props)
        guards: list[tuple[str, Any]] = []
        if r.resource_type == RDS:
            guards = [("deletionProtection", get(props, "deletionProtection"))]
        elif r.resource_type == CLOUDSQL:
            guards = [("deletionProtection", get(props, "deletionProtection")),
                      ("settings.deletionProtectionEnabled", get(props, "settings", "deletionProtectionEnabled"))]
        elif _fly_cluster(r) is None:
            continue
        for name, value in guards:
            if _known(value) and value is not True:
                report(f"{r.name} must set {name}=true in prod.", r.urn)
        if not r.opts.protect:
            report(f"{r.name} must be declared with protect=True in prod, so Pulumi refuses to delete it.", r.urn)


def replica_count(resources: Iterable[PolicyResource]) -> int:
    count = 0
    for r in resources:
        props = plain(r.props)
        environment = get(props, "environment")
        if r.resource_type in (RDS, CLOUDSQL) and _is_replica(r.resource_type, props):
            count += 1
        elif (fly := _fly_cluster(r)) is not None:
            count += max(0, (_int(fly.get(FLY_CLUSTER_SIZE)) or 1) - 1)
        elif r.resource_type in COMMANDS and isinstance(environment, Mapping) and LOCAL_REPLICAS in environment:
            count += _int(environment.get(LOCAL_REPLICAS)) or 0
    return count


def read_replicas_in_prod(args: StackValidationArgs, report: ReportViolation) -> None:
    tier = stack_tier(args)
    if tier is None or tier.read_replicas == 0:
        return
    found = replica_count(args.resources)
    if found < tier.read_replicas:
        report(f"prod needs {tier.read_replicas} read replicas, but the stack declares {found}.", None)


RESOURCE_POLICIES: dict[str, tuple[str, Callable[[ResourceValidationArgs, ReportViolation], None]]] = {
    "storage-encrypted": ("RDS storage is encrypted at rest (Cloud SQL always is).", storage_encrypted),
    "not-publicly-reachable": ("No public RDS, no Cloud SQL authorized networks, no ingress from 0.0.0.0/0 or ::/0.",
                               not_publicly_reachable),
    "ssl-enforced": ("TLS is enforced: rds.force_ssl=1 in the parameter group the instances use, Cloud SQL "
                     "sslMode ENCRYPTED_ONLY.", ssl_enforced),
    "cloudsql-edition-pinned": ("Every Cloud SQL instance pins its edition.", cloudsql_edition_pinned),
    "no-credential-in-command-line": ("Command resources carry secrets only in `environment`, never in their "
                                      "create/update/delete text.", no_credential_in_command_line),
}
STACK_POLICIES: dict[str, tuple[str, Callable[[StackValidationArgs, ReportViolation], None]]] = {
    "environment-known": ("The stack declares one release whose environment names a tier.", environment_known),
    "backups-meet-tier": ("Backups are on and kept at least as long as the environment's tier.", backups_meet_tier),
    "pitr-in-staging-and-prod": ("Point-in-time recovery is on where the tier has it (staging, prod).",
                                 pitr_in_staging_and_prod),
    "deletion-protection-in-prod": ("In prod, database instances have deletion protection and Pulumi's protect.",
                                    deletion_protection_in_prod),
    "read-replicas-in-prod": ("The stack declares at least the tier's read replicas (two in prod).",
                              read_replicas_in_prod),
}


def policies() -> list[Policy]:
    mandatory = EnforcementLevel.MANDATORY
    built: list[Policy] = [
        ResourceValidationPolicy(name=name, description=text, validate=check, enforcement_level=mandatory)
        for name, (text, check) in RESOURCE_POLICIES.items()
    ]
    built += [
        StackValidationPolicy(name=name, description=text, validate=check, enforcement_level=mandatory)
        for name, (text, check) in STACK_POLICIES.items()
    ]
    return built
