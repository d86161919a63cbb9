"""The CrossGuard pack (`policy/`): each policy on hand-made resources, then on every stack x provider of the real
program under the mock engine, where the real program passes and a weakened copy of each setting is caught.

The policies run exactly as the analyzer runs them: the policy objects' own `validate`, with props wrapped in
CrossGuard's unknown-checking proxy. One test starts the real pack process and asks it over gRPC.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from program import ROOT, Declared, evaluate, provider_config
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.settings import TIERS
from policy import gaia_policies as gp

ENVS = ("dev", "staging", "prod")
PROVIDERS = ("aws", "gcp", "fly", "local")
POLICIES = gp.policies()


@dataclass
class Res:
    """A resource as the analyzer sees it."""

    type: str
    name: str
    props: dict[str, Any]
    protect: bool = False
    urn: str = field(default="")

    def __post_init__(self) -> None:
        self.urn = self.urn or f"urn:pulumi:test::gaia-db::{self.type}::{self.name}"


def _opts(protect: bool) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def violations(resources: Iterable[Res]) -> dict[str, list[str]]:
    """Every policy's messages for these resources: resource policies one by one, stack policies on all."""
    resources = list(resources)
    found: dict[str, list[str]] = {}
    for policy in POLICIES:
        def report(message: str, urn: str | None = None, name: str = policy.name) -> None:
            found.setdefault(name, []).append(message)

        if isinstance(policy, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(r.type, unknown_checking_proxy(copy.deepcopy(r.props)), r.urn, r.name,
                                              _opts(r.protect), None)
                policy.validate(args, report)
        else:
            assert isinstance(policy, StackValidationPolicy)
            stack = [PolicyResource(r.type, unknown_checking_proxy(copy.deepcopy(r.props)), r.urn, r.name,
                                    _opts(r.protect), None, None, [], {}) for r in resources]
            policy.validate(StackValidationArgs(stack), report)
    return found


def release(environment: str = "prod") -> Res:
    return Res(gp.RELEASE, "gaia-db-release", {"environment": environment, "adminEmail": "admin@gaia.com"})


def rds(name: str = "primary", **props: Any) -> Res:
    base = {"storageEncrypted": True, "publiclyAccessible": False, "parameterGroupName": "gaia-prod",
            "backupRetentionPeriod": 7, "deletionProtection": True}
    return Res(gp.RDS, name, {**base, **props}, protect=True)


def cloudsql(name: str = "primary", replica: bool = False, **settings: Any) -> Res:
    backup = {"enabled": True, "pointInTimeRecoveryEnabled": True, "transactionLogRetentionDays": 7,
              "backupRetentionSettings": {"retainedBackups": 7, "retentionUnit": "COUNT"}}
    base = {"edition": "ENTERPRISE", "deletionProtectionEnabled": True, "backupConfiguration": backup,
            "ipConfiguration": {"sslMode": "ENCRYPTED_ONLY", "authorizedNetworks": []}}
    props: dict[str, Any] = {"deletionProtection": True, "settings": {**base, **settings}}
    if replica:
        props["masterInstanceName"] = "gaia-prod"
    return Res(gp.CLOUDSQL, name, props, protect=True)


def command(create: str, **environment: str) -> Res:
    return Res("command:local:Command", "cmd", {"create": create, "environment": environment})


# --- (1) each policy on hand-made resources ---

def test_the_pack_is_every_policy_mandatory_with_unique_names() -> None:
    names = [p.name for p in POLICIES]
    assert len(names) == len(set(names)) == len(gp.RESOURCE_POLICIES) + len(gp.STACK_POLICIES) == 10
    assert all(p.enforcement_level == EnforcementLevel.MANDATORY for p in POLICIES)


def test_a_safe_prod_stack_passes() -> None:
    replicas = [rds(f"replica-{i}", replicateSourceDb="gaia-prod", backupRetentionPeriod=0) for i in (1, 2)]
    assert violations([release(), rds(), *replicas]) == {}
    assert violations([release(), cloudsql(), cloudsql("r1", True), cloudsql("r2", True)]) == {}


@pytest.mark.parametrize(
    ("resources", "policy", "words"),
    [
        ([rds(storageEncrypted=False)], "storage-encrypted", "storageEncrypted=true"),
        ([rds(publiclyAccessible=True)], "not-publicly-reachable", "publiclyAccessible=false"),
        ([cloudsql(ipConfiguration={"sslMode": "ENCRYPTED_ONLY", "authorizedNetworks": [{"value": "0.0.0.0/0"}]})],
         "not-publicly-reachable", "0.0.0.0/0"),
        ([Res(gp.SECURITY_GROUP, "sg", {"ingress": [{"cidrBlocks": ["10.0.0.0/16", "0.0.0.0/0"]}]})],
         "not-publicly-reachable", "0.0.0.0/0"),
        ([Res(gp.SECURITY_GROUP, "sg", {"ingress": [{"ipv6CidrBlocks": ["::/0"]}]})], "not-publicly-reachable",
         "::/0"),
        ([Res(gp.SECURITY_GROUP_RULE, "rule", {"type": "ingress", "cidrBlocks": ["0.0.0.0/0"]})],
         "not-publicly-reachable", "0.0.0.0/0"),
        ([Res(gp.INGRESS_RULE, "rule", {"cidrIpv4": "0.0.0.0/0"})], "not-publicly-reachable", "0.0.0.0/0"),
        ([Res(gp.RDS_PARAMETERS, "params", {"family": "postgres16",
                                            "parameters": [{"name": "rds.force_ssl", "value": "0"}]})],
         "ssl-enforced", "rds.force_ssl=1"),
        ([rds(parameterGroupName="default.postgres16")], "ssl-enforced", "parameter group"),
        ([cloudsql(ipConfiguration={"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"})], "ssl-enforced",
         "ENCRYPTED_ONLY"),
        ([cloudsql(edition=None)], "cloudsql-edition-pinned", "edition"),
        ([rds(backupRetentionPeriod=6)], "backups-meet-tier", "at least 7"),
        ([cloudsql(backupConfiguration={"enabled": False, "pointInTimeRecoveryEnabled": True})],
         "backups-meet-tier", "enable backups"),
        ([cloudsql(backupConfiguration={"pointInTimeRecoveryEnabled": True})], "backups-meet-tier",
         "enable backups"),  # `enabled` absent: Cloud SQL's default is off
        ([cloudsql(backupConfiguration={"enabled": True, "pointInTimeRecoveryEnabled": False,
                                        "transactionLogRetentionDays": 7,
                                        "backupRetentionSettings": {"retainedBackups": 7}})],
         "pitr-in-staging-and-prod", "pointInTimeRecoveryEnabled"),
        ([rds(deletionProtection=False)], "deletion-protection-in-prod", "deletionProtection=true"),
        ([cloudsql(deletionProtectionEnabled=False)], "deletion-protection-in-prod", "deletionProtectionEnabled"),
    ],
)
def test_each_policy_reports_its_violation(resources: list[Res], policy: str, words: str) -> None:
    found = violations([release(), *resources])
    assert policy in found, found
    assert any(words in message for message in found[policy]), found[policy]


def test_protect_and_replicas_in_prod_only() -> None:
    unprotected = rds()
    unprotected.protect = False
    found = violations([release("prod"), unprotected])
    assert set(found) == {"deletion-protection-in-prod", "read-replicas-in-prod"}
    assert found["read-replicas-in-prod"] == ["prod needs 2 read replicas, but the stack declares 0."]
    # The same instance in staging: no protection or replica rule (its 7 days of backups exceed the tier's 3).
    assert violations([release("staging"), unprotected]) == {}


def test_the_tier_comes_from_the_one_release() -> None:
    weak = rds(backupRetentionPeriod=1, deletionProtection=False)
    assert violations([release("dev"), weak]) == {}
    assert set(violations([release("staging"), weak])) == {"backups-meet-tier"}
    assert "environment-known" in violations([weak])
    assert "environment-known" in violations([release("dev"), release("prod"), weak])
    # Two releases: no tier is guessed from either (the first one's, prod here, would judge by the wrong tier too).
    assert set(violations([release("prod"), release("dev"), weak])) == {"environment-known"}
    assert set(violations([release("qa"), weak])) == {"environment-known"}


@pytest.mark.parametrize(
    "text",
    [
        "PGPASSWORD=hunter2secret psql -h db",
        "export FLY_API_TOKEN='fo1_abcdef'",
        "fly postgres create --password hunter2secret",
        "psql -c \"ALTER ROLE gaia PASSWORD 'hunter2secret'\"",
        "psql postgresql://gaia:hunter2secret@db:5432/gaia",
    ],
)
def test_a_literal_credential_in_a_command_is_caught(text: str) -> None:
    found = violations([release("dev"), command(text)])
    assert list(found) == ["no-credential-in-command-line"] and "literal credential" in found[
        "no-credential-in-command-line"][0]


@pytest.mark.parametrize(
    "text",
    [
        'PGPASSWORD=$admin_password psql -h db',
        'password=$GAIA_FLY_ADMIN_PASSWORD',
        "printf 'OPERATOR_PASSWORD=\"\"\"%s\"\"\"\\n' \"$password\" | fly secrets import",
        "psql -c \"ALTER ROLE gaia PASSWORD '$literal'\"",
        "password_encryption = 'scram-sha-256'",
        'psql "postgresql://gaia:${PW}@db/gaia"',
        "require_env FLY_API_TOKEN GAIA_FLY_APP",
        "# `fly postgres create --password X` would put the password in argv, so: PGPASSWORD=... never",
    ],
)
def test_expanding_a_secret_from_the_environment_is_allowed(text: str) -> None:
    assert violations([release("dev"), command(text, FLY_API_TOKEN="fo1_the-real-token")]) == {}


def test_a_secret_value_pasted_into_a_command_is_caught() -> None:
    secret = "fo1_the-real-token"
    text = f"fly status --access-token-file <(echo {secret})"
    found = violations([release("dev"), command(text, FLY_API_TOKEN=secret)])
    assert found == {"no-credential-in-command-line": [
        "command cmd puts the value of FLY_API_TOKEN in its create text; pass secrets only through `environment` "
        "and expand them in the script."]}
    # A non-credential value (the app name) may appear in the text.
    assert violations([release("dev"), command("fly status --app gaia-db-dev", GAIA_FLY_APP="gaia-db-dev")]) == {}


def test_values_unknown_in_a_preview_are_skipped_not_guessed() -> None:
    unknown = UNKNOWN_STRING_VALUE
    resources = [
        release("prod"),
        rds(storageEncrypted=unknown, backupRetentionPeriod=unknown, parameterGroupName=unknown),
        rds("replica-1", replicateSourceDb=unknown),
        rds("replica-2", replicateSourceDb=unknown),
        command("psql -c 'SELECT 1'", GAIA_ADMIN_PASSWORD=unknown),
        Res(gp.SECURITY_GROUP, "sg", {"ingress": [{"cidrBlocks": [unknown]}]}),
    ]
    assert violations(resources) == {}


# --- (2) the real program, every stack x provider ---

_programs: dict[tuple[str, str], list[Res]] = {}


def program(env: str, provider: str) -> list[Res]:
    """The real program's resources (a fresh copy each call, to weaken freely)."""
    if (env, provider) not in _programs:
        declared: list[Declared] = evaluate(env, provider_config(env, provider)).resources
        _programs[env, provider] = [Res(d.type, d.name, d.inputs, d.protect, d.urn) for d in declared]
    return copy.deepcopy(_programs[env, provider])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("env", ENVS)
def test_every_stack_of_the_real_program_passes_every_policy(env: str, provider: str) -> None:
    resources = program(env, provider)
    assert violations(resources) == {}
    # The policies looked at something real: the tier's replicas are counted from this provider's resources.
    assert gp.replica_count(PolicyResource(r.type, r.props, r.urn, r.name, _opts(r.protect), None, None, [], {})
                            for r in resources) == TIERS[env].read_replicas


def one(resources: list[Res], typ: str, suffix: str) -> Res:
    found = [r for r in resources if r.type == typ and r.name.endswith(suffix)]
    assert len(found) == 1, (typ, suffix, [r.name for r in resources])
    return found[0]


def set_env(suffix: str, key: str, value: str) -> Callable[[list[Res]], None]:
    return lambda rs: one(rs, "command:local:Command", suffix).props["environment"].__setitem__(key, value)


def drop(typ: str, suffix: str) -> Callable[[list[Res]], None]:
    return lambda rs: rs.remove(one(rs, typ, suffix))


def unprotect(typ: str, suffix: str) -> Callable[[list[Res]], None]:
    return lambda rs: setattr(one(rs, typ, suffix), "protect", False)


def rds_input(suffix: str, key: str, value: Any) -> Callable[[list[Res]], None]:
    return lambda rs: one(rs, gp.RDS, suffix).props.__setitem__(key, value)


def sql_setting(suffix: str, *path_and_value: Any) -> Callable[[list[Res]], None]:
    *path, key, value = path_and_value

    def weaken(rs: list[Res]) -> None:
        target = one(rs, gp.CLOUDSQL, suffix).props
        for part in path:
            target = target[part]
        target[key] = value
    return weaken


def remove(typ: str, suffix: str, *path: str) -> Callable[[list[Res]], None]:
    """The property left out altogether (the provider's default then applies), not set to a bad value."""
    *parents, key = path

    def weaken(rs: list[Res]) -> None:
        target = one(rs, typ, suffix).props
        for part in parents:
            target = target[part]
        del target[key]
    return weaken


def paste_into(suffix: str, field_name: str, env_key: str, template: str) -> Callable[[list[Res]], None]:
    def weaken(rs: list[Res]) -> None:
        props = one(rs, "command:local:Command", suffix).props
        props[field_name] = template.format(props["environment"][env_key]) + "\n" + props[field_name]
    return weaken


def open_ingress(rs: list[Res]) -> None:
    one(rs, gp.SECURITY_GROUP, "sg").props["ingress"][0]["cidrBlocks"] = ["0.0.0.0/0"]


def force_ssl_off(rs: list[Res]) -> None:
    for parameter in one(rs, gp.RDS_PARAMETERS, "params").props["parameters"]:
        if parameter["name"] == "rds.force_ssl":
            parameter["value"] = "0"


WEAKENED = [
    # (provider, env, weakening, the policies that must catch it)
    ("aws", "prod", rds_input("primary", "storageEncrypted", False), {"storage-encrypted"}),
    ("aws", "dev", rds_input("primary", "publiclyAccessible", True), {"not-publicly-reachable"}),
    ("aws", "staging", open_ingress, {"not-publicly-reachable"}),
    ("aws", "prod", force_ssl_off, {"ssl-enforced"}),
    ("aws", "dev", rds_input("primary", "parameterGroupName", "default.postgres16"), {"ssl-enforced"}),
    ("aws", "prod", rds_input("primary", "backupRetentionPeriod", 6), {"backups-meet-tier"}),
    ("aws", "staging", rds_input("primary", "backupRetentionPeriod", 2), {"backups-meet-tier"}),
    ("aws", "staging", rds_input("primary", "backupRetentionPeriod", 0),
     {"backups-meet-tier", "pitr-in-staging-and-prod"}),
    ("aws", "prod", rds_input("replica-1", "deletionProtection", False), {"deletion-protection-in-prod"}),
    ("aws", "prod", unprotect(gp.RDS, "primary"), {"deletion-protection-in-prod"}),
    ("aws", "prod", drop(gp.RDS, "replica-2"), {"read-replicas-in-prod"}),
    ("gcp", "dev", sql_setting("primary", "settings", "ipConfiguration", "authorizedNetworks",
                               [{"name": "anywhere", "value": "0.0.0.0/0"}]), {"not-publicly-reachable"}),
    ("gcp", "prod", sql_setting("replica-1", "settings", "ipConfiguration", "sslMode",
                                "ALLOW_UNENCRYPTED_AND_ENCRYPTED"), {"ssl-enforced"}),
    ("gcp", "staging", sql_setting("primary", "settings", "edition", None), {"cloudsql-edition-pinned"}),
    ("gcp", "prod", sql_setting("replica-2", "settings", "edition", None), {"cloudsql-edition-pinned"}),
    ("gcp", "dev", sql_setting("primary", "settings", "backupConfiguration", "enabled", False),
     {"backups-meet-tier"}),
    ("gcp", "prod", sql_setting("primary", "settings", "backupConfiguration", "backupRetentionSettings",
                                "retainedBackups", 3), {"backups-meet-tier"}),
    ("gcp", "staging", sql_setting("primary", "settings", "backupConfiguration", "transactionLogRetentionDays", 1),
     {"backups-meet-tier"}),
    ("gcp", "prod", sql_setting("primary", "settings", "backupConfiguration", "pointInTimeRecoveryEnabled", False),
     {"pitr-in-staging-and-prod"}),
    ("gcp", "prod", sql_setting("primary", "deletionProtection", False), {"deletion-protection-in-prod"}),
    ("gcp", "prod", sql_setting("replica-1", "settings", "deletionProtectionEnabled", False),
     {"deletion-protection-in-prod"}),
    ("gcp", "prod", unprotect(gp.CLOUDSQL, "primary"), {"deletion-protection-in-prod"}),
    ("gcp", "prod", drop(gp.CLOUDSQL, "replica-1"), {"read-replicas-in-prod"}),
    ("fly", "prod", paste_into("cluster", "create", "FLY_API_TOKEN", "export FLY_ACCESS_TOKEN={}"),
     {"no-credential-in-command-line"}),
    ("fly", "dev", paste_into("postgres-password", "update", "GAIA_FLY_ADMIN_PASSWORD",
                              "printf 'OPERATOR_PASSWORD={}' | fly secrets import"),
     {"no-credential-in-command-line"}),
    ("fly", "staging", set_env("cluster", gp.FLY_SNAPSHOT_DAYS, "1"), {"backups-meet-tier"}),
    ("fly", "prod", set_env("cluster", gp.FLY_RECOVERY_WINDOW, "3d"), {"backups-meet-tier"}),
    ("fly", "staging", set_env("cluster", gp.FLY_WAL_BACKUPS, "false"), {"pitr-in-staging-and-prod"}),
    ("fly", "prod", set_env("cluster", gp.FLY_CLUSTER_SIZE, "2"), {"read-replicas-in-prod"}),
    ("fly", "prod", unprotect("command:local:Command", "cluster"), {"deletion-protection-in-prod"}),
    ("local", "dev", paste_into("primary", "create", "GAIA_ADMIN_PASSWORD",
                                'psql "postgresql://gaia_admin:{}@127.0.0.1/gaia_dev" -c "SELECT 1"'),
     {"no-credential-in-command-line"}),
    ("local", "prod", set_env("replicas", gp.LOCAL_REPLICAS, "1"), {"read-replicas-in-prod"}),
    ("aws", "prod", drop(gp.RELEASE, "release"), {"environment-known"}),
    # The same rules with the property absent: RDS's defaults are unencrypted storage, the default parameter group
    # (no rds.force_ssl) and no deletion protection; Cloud SQL's are unencrypted connections allowed, an edition
    # Google picks and no backups.
    ("aws", "prod", remove(gp.RDS, "primary", "storageEncrypted"), {"storage-encrypted"}),
    ("aws", "dev", remove(gp.RDS, "primary", "parameterGroupName"), {"ssl-enforced"}),
    ("aws", "prod", remove(gp.RDS, "primary", "backupRetentionPeriod"),
     {"backups-meet-tier", "pitr-in-staging-and-prod"}),
    ("aws", "prod", remove(gp.RDS, "replica-1", "deletionProtection"), {"deletion-protection-in-prod"}),
    ("gcp", "prod", remove(gp.CLOUDSQL, "replica-1", "settings", "ipConfiguration", "sslMode"), {"ssl-enforced"}),
    ("gcp", "staging", remove(gp.CLOUDSQL, "primary", "settings", "edition"), {"cloudsql-edition-pinned"}),
    ("gcp", "dev", remove(gp.CLOUDSQL, "primary", "settings", "backupConfiguration"), {"backups-meet-tier"}),
    ("gcp", "prod", remove(gp.CLOUDSQL, "primary", "settings", "backupConfiguration", "pointInTimeRecoveryEnabled"),
     {"pitr-in-staging-and-prod"}),
    ("gcp", "prod", remove(gp.CLOUDSQL, "primary", "deletionProtection"), {"deletion-protection-in-prod"}),
    ("gcp", "prod", remove(gp.CLOUDSQL, "replica-1", "settings", "deletionProtectionEnabled"),
     {"deletion-protection-in-prod"}),
    ("fly", "staging", remove("command:local:Command", "cluster", "environment", gp.FLY_WAL_BACKUPS),
     {"pitr-in-staging-and-prod"}),
    ("fly", "prod", remove("command:local:Command", "cluster", "environment", gp.FLY_SNAPSHOT_DAYS),
     {"backups-meet-tier"}),
]


@pytest.mark.parametrize(("provider", "env", "weaken", "caught_by"), WEAKENED,
                         ids=[f"{p}-{e}-{i}" for i, (p, e, _, _) in enumerate(WEAKENED)])
def test_a_weakened_setting_of_the_real_program_is_caught_by_its_policy(
    provider: str, env: str, weaken: Callable[[list[Res]], None], caught_by: set[str]
) -> None:
    resources = program(env, provider)
    weaken(resources)
    assert set(violations(resources)) == caught_by


def test_the_release_environment_sets_the_tier_of_the_real_program() -> None:
    # The aws dev stack, claimed to be prod by its release: dev's 1-day backups, no protection, no replicas.
    resources = program("dev", "aws")
    one(resources, gp.RELEASE, "release").props["environment"] = "prod"
    assert set(violations(resources)) == {"backups-meet-tier", "deletion-protection-in-prod", "read-replicas-in-prod"}


# --- the pack as Pulumi runs it ---

def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def test_the_pack_process_serves_the_policies_and_refuses_a_public_database(tmp_path: Any) -> None:
    # `pulumi preview --policy-pack policy` starts the pack's __main__ and reads its port from stdout.
    pack = subprocess.Popen([sys.executable, str(ROOT / "policy")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert pack.stdout is not None
        port = pack.stdout.readline().strip()
        assert port.isdigit(), pack.stderr.read() if pack.stderr else port
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            analyzer = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
            assert info.name == "gaia-db"
            assert {p.name for p in info.policies} == {p.name for p in POLICIES}
            request = analyzer_pb2.AnalyzeRequest(
                type=gp.RDS, name="gaia-db-dev-primary", urn="urn:pulumi:dev::gaia-db::aws:rds/instance:Instance::x",
                properties=_struct({"storageEncrypted": True, "publiclyAccessible": True,
                                    "parameterGroupName": "gaia-dev"}),
            )
            diagnostics = analyzer.Analyze(request).diagnostics
            assert [(d.policyName, d.enforcementLevel) for d in diagnostics] == [
                ("not-publicly-reachable", analyzer_pb2.MANDATORY)]
    finally:
        pack.terminate()
        pack.wait(timeout=10)
