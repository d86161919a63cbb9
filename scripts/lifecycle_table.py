"""Regenerate docs/lifecycle.json and docs/lifecycle.md: what replaces, what never settles, per resource type.

The mechanical part (schema `ForceNew`) is read from the upstream Terraform provider source: a bare git dir (what
`fetch` leaves under /work/.mirror) at a pinned tag. The conditional part (CustomizeDiff `ForceNewIf*`,
DiffSuppressFunc) and the known permanent-diff / update-failure cases are written by hand below, each with the
source it comes from. tests/unit/test_lifecycle.py reads docs/lifecycle.json.

    venv/bin/python scripts/lifecycle_table.py --google /work/.mirror/hashicorp+terraform-provider-google/repo

Without a source for a provider (the terraform-provider-aws snapshot is too large to fetch here), its recorded
entries in docs/lifecycle.json are kept as they are.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JSON_PATH = ROOT / "docs" / "lifecycle.json"
MD_PATH = ROOT / "docs" / "lifecycle.md"

GOOGLE_TAG = "v7.45.0"  # the terraform-provider-google release matching pulumi-gcp's bridged upstream (README)
# Pulumi type -> (source file, the Go function whose schema is read)
GOOGLE_TYPES = {
    "gcp:sql/databaseInstance:DatabaseInstance": (
        "google/services/sql/resource_sql_database_instance.go", "ResourceSqlDatabaseInstance"),
    "gcp:sql/database:Database": ("google/services/sql/resource_sql_database.go", "ResourceSQLDatabase"),
    "gcp:sql/user:User": ("google/services/sql/resource_sql_user.go", "ResourceSqlUser"),
    "gcp:compute/globalAddress:GlobalAddress": (
        "google/services/compute/resource_compute_global_address.go", "ResourceComputeGlobalAddress"),
    "gcp:servicenetworking/connection:Connection": (
        "google/services/servicenetworking/resource_service_networking_connection.go",
        "ResourceServiceNetworkingConnection"),
    "gcp:monitoring/alertPolicy:AlertPolicy": (
        "google/services/monitoring/resource_monitoring_alert_policy.go", "ResourceMonitoringAlertPolicy"),
}
# Data-holding types: a replacement loses or moves data. `name` is the input that fixes the cloud-side name.
DATA_HOLDING = {
    "aws:rds/instance:Instance": "identifier",
    "gcp:sql/databaseInstance:DatabaseInstance": "name",
    "gcp:sql/database:Database": "name",
}

TPG = "hashicorp/terraform-provider-google"
TPG_SQL = "google/services/sql/resource_sql_database_instance.go"
TPA = "hashicorp/terraform-provider-aws"
TPA_COMMIT = "00e4b23838859616dd0ebc9d1fd9364c0f6bff22"
TPA_RDS = "internal/service/rds/instance.go"

# Hand-written: CustomizeDiff / DiffSuppressFunc behaviour, with the line it comes from. `when` is interpreted by
# tests/unit/test_lifecycle.py: shrink (new < old), unset (old set, new unset), any (any change).
CONDITIONAL: list[dict[str, Any]] = [
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "path": "settings.diskSize", "when": "shrink",
     "effect": "replace",
     "source": f"{TPG}@{GOOGLE_TAG} {TPG_SQL}: diskSizeCutomizeDiff (d.ForceNew on a shrink; cleared only when "
               "disk_autoresize is on, since 8f745c0c #24399); before it, CustomizeDiff "
               "ForceNewIfChange(\"settings.0.disk_size\", isDiskShrinkage), the behaviour pulumi-gcp's "
               "disk_autoresize doc still describes. Modelled as a replacement, the older and stricter reading."},
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "path": "masterInstanceName", "when": "any",
     "effect": "replace",
     "source": f"{TPG}@{GOOGLE_TAG} {TPG_SQL}: customdiff.ForceNewIf(\"master_instance_name\", "
               "!isSwitchoverFromOldPrimarySide)"},
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "path": "settings.ipConfiguration.privateNetwork",
     "when": "unset", "effect": "replace",
     "source": f"{TPG}@{GOOGLE_TAG} {TPG_SQL}: privateNetworkCustomizeDiff (ForceNew when private_network goes "
               "from set to unset)"},
    {"type": "aws:rds/instance:Instance", "path": "allocatedStorage", "when": "shrink",
     "effect": "no diff while maxAllocatedStorage > the declared size, else a failed update (RDS never shrinks)",
     "source": f"{TPA}@{TPA_COMMIT} {TPA_RDS}: allocated_storage DiffSuppressFunc "
               "(oldInt > newInt && mas > newInt)"},
]
# Hand-written: declarations that never settle (permanent diff) or fail on update. `check` names the function in
# tests/unit/test_lifecycle.py that finds them in an evaluation.
DECLARATION: list[dict[str, Any]] = [
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "check": "replica_maintenance_window",
     "effect": "permanent diff and failed replica updates: read replicas take no maintenance window",
     "source": "hashicorp/terraform-provider-google#7609, #7422; terraform-google-modules/terraform-google-sql-db "
               "dropped it for replicas"},
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "check": "backups_exceed_log_days",
     "effect": "failed create/update: \"backup retention should be > transaction log retention\"",
     "source": "terraform-google-modules/terraform-google-sql-db PR #785 (API rule)"},
    {"type": "gcp:sql/databaseInstance:DatabaseInstance", "check": "disk_size_declared_with_autoresize",
     "effect": "a disk Cloud SQL grew makes the declared disk_size a shrink (the conditional row above) unless "
               "settings.diskSize is in ignore_changes",
     "source": "pulumi-gcp DatabaseInstanceSettings.disk_autoresize doc (ignore_changes on disk_size)"},
    {"type": "aws:rds/instance:Instance", "check": "storage_ceiling",
     "effect": "failed update: max_allocated_storage above 65536 GiB, or under 10 % above allocated_storage",
     "source": "RDS API ModifyDBInstance MaxAllocatedStorage rules (RDS User Guide, storage autoscaling)"},
    {"type": "aws:rds/instance:Instance", "check": "final_snapshot_per_generation",
     "effect": "DBSnapshotAlreadyExists on the second deletion/replacement when the final snapshot name does not "
               "change with the instance generation",
     "source": f"{TPA}@{TPA_COMMIT} {TPA_RDS}: final_snapshot_identifier is not ForceNew and is used as given on "
               "delete"},
]

# AWS schema ForceNew, recorded from the source above (no local mirror: the snapshot exceeds the fetch limit).
AWS_RECORDED = {
    "aws:rds/instance:Instance": [
        "availability_zone", "character_set_name", "custom_iam_instance_profile", "db_name", "engine",
        "identifier", "identifier_prefix", "kms_key_id", "name", "nchar_character_set_name",
        "restore_to_point_in_time", "s3_import.bucket_name", "s3_import.bucket_prefix", "s3_import.ingestion_role",
        "s3_import.source_engine", "s3_import.source_engine_version", "snapshot_identifier", "storage_encrypted",
        "timezone", "username",
    ],
}
AWS_OTHER = {
    # Recorded by hand (terraform-provider-aws internal/service/rds/parameter_group.go, subnet_group.go,
    # internal/service/ec2/vpc_security_group.go): name/name_prefix are ForceNew on all three; family on the
    # parameter group; vpc_id on the security group; description on the security group and parameter group.
    "aws:rds/parameterGroup:ParameterGroup": ["name", "name_prefix", "family", "description"],
    "aws:rds/subnetGroup:SubnetGroup": ["name", "name_prefix"],
    "aws:ec2/securityGroup:SecurityGroup": ["name", "name_prefix", "vpc_id", "description"],
    # issue 11's monitoring resources, likewise by hand (internal/service/logs/group.go, iam/role.go,
    # iam/role_policy_attachment.go, cloudwatch/metric_alarm.go, rds/event_subscription.go): names are ForceNew;
    # a log group's retention, an alarm's threshold and an event subscription's topic and categories update in place.
    "aws:cloudwatch/logGroup:LogGroup": ["name", "name_prefix"],
    "aws:iam/role:Role": ["name", "name_prefix", "path"],
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ["role", "policy_arn"],
    "aws:cloudwatch/metricAlarm:MetricAlarm": ["name"],
    "aws:rds/eventSubscription:EventSubscription": ["name", "name_prefix"],
    # issue 21's SSM bastion, by hand (internal/service/ec2/ec2_instance.go, iam/instance_profile.go): the instance is
    # replaced by a new image, subnet or root-volume encryption (its `ami` is in ignore_changes, so a newer image
    # never does); instance_type, security groups and the profile update in place. Nothing here holds data.
    "aws:ec2/instance:Instance": ["ami", "availability_zone", "subnet_id", "associate_public_ip_address",
                                  "private_ip", "key_name", "tenancy", "placement_group",
                                  "root_block_device.encrypted", "root_block_device.kms_key_id"],
    "aws:iam/instanceProfile:InstanceProfile": ["name", "name_prefix", "path"],
    # issue 15's RDS CA fetch (components/scripts/aws/ca-bundle.sh), by hand (pulumi-command provider/pkg/provider/
    # local/command.go: `triggers` is replaceOnChanges; create/update/environment update in place). It declares no
    # triggers: a new endpoint or identifier is an update that fetches again. Nothing here holds data.
    "command:local:Command": ["triggers"],
    # issue 19's RDS Proxy, by hand (internal/service/rds/proxy.go, proxy_default_target_group.go, proxy_target.go,
    # secretsmanager/secret.go, secret_version.go, iam/role_policy.go): a proxy's name, engine family and subnets
    # replace it; its targets are replaced when the instance they name changes. The instance never sees the proxy
    # (its group gains a rule). Nothing here holds data.
    "aws:rds/proxy:Proxy": ["name", "engine_family", "vpc_subnet_ids"],
    "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup": ["db_proxy_name"],
    "aws:rds/proxyTarget:ProxyTarget": ["db_proxy_name", "target_group_name", "db_instance_identifier",
                                        "db_cluster_identifier"],
    "aws:secretsmanager/secret:Secret": ["name", "name_prefix"],
    "aws:secretsmanager/secretVersion:SecretVersion": ["secret_id", "secret_string", "secret_binary"],
    "aws:iam/rolePolicy:RolePolicy": ["name", "name_prefix", "role"],
}


def camel(path: str) -> str:
    """A Terraform path (settings.0.disk_size) as the Pulumi input path (settings.diskSize)."""
    parts = [p for p in path.split(".") if not p.isdigit()]
    return ".".join(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in parts)


def _strip_strings(text: str) -> str:
    """Blank out Go string literals (a description may hold braces), keeping quoted map keys."""
    text = re.sub(r"`[^`]*`", '""', text)
    return re.sub(r'"(?:[^"\\\n]|\\.)*"(?!\s*:\s*\{)', '""', text)


def force_new_paths(source: str, function: str) -> list[str]:
    """Schema paths with `ForceNew: true` in `function`'s schema map (nested blocks joined with dots)."""
    start = source.index(f"func {function}()")
    body = _strip_strings(source[start:])
    body = body[body.index("Schema: map[string]*schema.Schema{"):]
    found: list[str] = []
    stack: list[str | None] = []
    for match in re.finditer(r'"([a-z0-9_]+)"\s*:\s*\{|\{|\}|ForceNew:\s*true', body):
        lexeme = match.group(0)
        if match.group(1):
            stack.append(match.group(1))
        elif lexeme == "{":
            stack.append(None)
        elif lexeme == "}":
            stack.pop()
            if not stack:
                break
        else:
            path = ".".join(key for key in stack if key)
            if path and path not in found:
                found.append(path)
    return found


def git_show(git_dir: str, rev: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def build(google: str | None) -> dict[str, Any]:
    previous = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {"types": {}}
    types: dict[str, Any] = {}
    for typ, fields in {**AWS_RECORDED, **AWS_OTHER}.items():
        source = f"{TPA}@{TPA_COMMIT} {TPA_RDS}" if typ in AWS_RECORDED else "recorded by hand (see AWS_OTHER)"
        types[typ] = {"forceNew": [camel(f) for f in fields], "source": source}
    if google:
        commit = subprocess.run(["git", "--git-dir", google, "rev-list", "-n1", GOOGLE_TAG], check=True,
                                capture_output=True, text=True).stdout.strip()
        for typ, (path, function) in GOOGLE_TYPES.items():
            paths = force_new_paths(git_show(google, GOOGLE_TAG, path), function)
            types[typ] = {"forceNew": [camel(p) for p in paths], "source": f"{TPG}@{commit} ({GOOGLE_TAG}) {path}"}
    else:
        types.update({t: v for t, v in previous["types"].items() if t.startswith("gcp:")})
    for typ, name in DATA_HOLDING.items():
        types[typ]["dataHolding"] = True
        types[typ]["nameInput"] = name
    return {"types": dict(sorted(types.items())), "conditional": CONDITIONAL, "declaration": DECLARATION}


def markdown(table: dict[str, Any]) -> str:
    lines = [
        "# Lifecycle: what replaces a resource, and what never settles",
        "",
        "Generated by `venv/bin/python scripts/lifecycle_table.py --google <terraform-provider-google git dir>`"
        " from the upstream provider source; `tests/unit/test_lifecycle.py` reads the same facts from"
        " `docs/lifecycle.json` and fails when a config change or cloud-side drift would replace a data-holding"
        " resource, or a declaration hits a listed case.",
        "",
        "Versions: pulumi-aws 7.51.1 and pulumi-gcp 10.2.0 are pinned in `constraints.txt`. The Google facts are"
        f" read at terraform-provider-google {GOOGLE_TAG}; the AWS facts at terraform-provider-aws"
        f" {TPA_COMMIT[:12]} (the newest stored version reachable here; re-check against the pinned bridge's"
        " upstream when the source can be fetched).",
        "",
        "## Schema `ForceNew` (mechanical)",
        "",
        "| resource type | data-holding | properties whose change replaces it | source |",
        "|---|---|---|---|",
    ]
    for typ, info in table["types"].items():
        props = ", ".join(f"`{p}`" for p in info["forceNew"])
        lines.append(f"| `{typ}` | {'yes' if info.get('dataHolding') else ''} | {props} | {info['source']} |")
    lines += ["", "## Conditional replacement and suppressed diffs (CustomizeDiff, DiffSuppressFunc; by hand)", "",
              "| resource type | property | when | effect | source |", "|---|---|---|---|---|"]
    for rule in table["conditional"]:
        lines.append(f"| `{rule['type']}` | `{rule['path']}` | {rule['when']} | {rule['effect']} | {rule['source']} |")
    lines += ["", "## Known permanent-diff and update-failure cases (by hand)", "",
              "| resource type | check | effect | source |", "|---|---|---|---|"]
    for rule in table["declaration"]:
        lines.append(f"| `{rule['type']}` | `{rule['check']}` | {rule['effect']} | {rule['source']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--google", help="bare git dir of hashicorp/terraform-provider-google")
    args = parser.parse_args()
    table = build(args.google)
    JSON_PATH.write_text(json.dumps(table, indent=1) + "\n")
    MD_PATH.write_text(markdown(table))
    print(f"wrote {JSON_PATH.relative_to(ROOT)} and {MD_PATH.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
