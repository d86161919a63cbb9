"""The config contract: documented defaults per tier, and one clear sentence for every invalid value."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from components.settings import TIERS, Pool, SettingsError, parse_settings
from components.sizing import Size


def token() -> pulumi.Output[str]:
    # Made per test, never at import: pytest's collection probes module attributes, and an Output answers every
    # attribute with a new lifted Output that later fails inside the event loop.
    return pulumi.Output.secret("fly-token")


def base(provider: str = "aws", **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"provider": provider, "adminEmail": "admin@dev.gaia.com"}
    if provider == "fly":
        raw["fly"] = {"org": "gaia"}
    raw.update(extra)
    return raw


def parse(raw: dict[str, Any], stack: str = "dev", **kwargs: Any):  # type: ignore[no-untyped-def]
    if raw.get("provider") == "fly" and "fly_api_token" not in kwargs:
        kwargs["fly_api_token"] = token()
    if raw.get("provider") == "gcp":
        kwargs.setdefault("gcp_project", "gaia-project")
        kwargs.setdefault("gcp_region", "us-west1")
    return parse_settings(raw, stack=stack, **kwargs)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_tier_fills_every_unset_value(env: str) -> None:
    s = parse(base(), stack=env)
    tier = TIERS[env]  # type: ignore[index]
    assert s.environment == env
    assert (s.size, s.read_replicas, s.backup_retention_days, s.pool) == (
        tier.size, tier.read_replicas, tier.backup_retention_days, tier.pool,
    )


def test_the_documented_tiers() -> None:
    assert TIERS["dev"].size == Size(1, 256, 10) and TIERS["dev"].pool == Pool(5, 10)
    assert TIERS["staging"].size == Size(2, 1024, 50) and TIERS["staging"].pool == Pool(10, 20)
    assert TIERS["prod"].size == Size(8, 16384, 500) and TIERS["prod"].pool == Pool(20, 40)
    assert [TIERS[e].read_replicas for e in ("dev", "staging", "prod")] == [0, 0, 2]
    assert [TIERS[e].backup_retention_days for e in ("dev", "staging", "prod")] == [1, 3, 7]
    assert [TIERS[e].point_in_time_recovery for e in ("dev", "staging", "prod")] == [False, True, True]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [("fly", "postgres"), ("aws", "llm_platform"), ("gcp", "llm_platform"), ("local", "gaia_dev")],
)
def test_database_name_defaults_per_provider(provider: str, expected: str) -> None:
    assert parse(base(provider)).database_name == expected


def test_explicit_values_override_the_tier_and_config_strings_count_as_numbers() -> None:
    s = parse(base(size={"cpus": "4", "memoryMb": 8192, "storageGb": 100}, readReplicas="3",
                   backupRetentionDays=14, pool={"size": 7, "maxOverflow": 0}), stack="staging")
    assert s.size == Size(4, 8192, 100)
    assert (s.read_replicas, s.backup_retention_days, s.pool) == (3, 14, Pool(7, 0))


def test_environment_key_wins_over_the_stack_name() -> None:
    s = parse(base("local", environment="prod"), stack="laptop")
    assert s.environment == "prod" and s.read_replicas == 2
    assert s.local is not None and s.local.data_dir == ".gaia/laptop"
    assert s.resource_prefix == "gaia-db-laptop"


def test_fly_defaults() -> None:
    s = parse(base("fly"))
    assert s.fly is not None and (s.fly.org, s.fly.region, s.fly.flavor) == ("gaia", "lax", "postgres")
    assert s.resource_prefix == "gaia-db-dev"


def test_aws_network_settings() -> None:
    s = parse(base(aws={"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd", "subnet-4567abcd"],
                        "allowedCidrs": ["10.0.0.0/16"], "allowedSecurityGroupIds": ["sg-0123abcd"]}))
    assert s.aws is not None
    assert s.aws.subnet_ids == ("subnet-0123abcd", "subnet-4567abcd") and s.aws.allowed_cidrs == ("10.0.0.0/16",)


# Each case: the raw config, the stack, and fragments the one-sentence error must contain (key, value, what is allowed).
INVALID: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("no provider", {"adminEmail": "a@b.co"}, "dev", ["gaia-db:provider", "fly, aws, gcp, local"]),
    ("unknown provider", base(provider="azure"), "dev", ["gaia-db:provider", '"azure"', "fly, aws, gcp, local"]),
    ("unknown environment", base(environment="qa"), "dev", ["gaia-db:environment", '"qa"', "dev, staging, prod"]),
    ("stack not an environment", base(), "feature-x", ["gaia-db:environment", '"feature-x"', "dev, staging, prod"]),
    ("no admin e-mail", {"provider": "aws"}, "dev", ["gaia-db:adminEmail", "e-mail"]),
    ("malformed e-mail", base(adminEmail="admin@"), "dev", ["gaia-db:adminEmail", '"admin@"', "e-mail address"]),
    ("e-mail with spaces", base(adminEmail="ad min@gaia.com"), "dev", ["gaia-db:adminEmail", "e-mail address"]),
    ("e-mail not a string", base(adminEmail=42), "dev", ["gaia-db:adminEmail", "42"]),
    ("negative cpus", base(size={"cpus": -1, "memoryMb": 1024, "storageGb": 10}), "dev",
     ["gaia-db:size.cpus", "-1", "from 1 to 96"]),
    ("absurd memory", base(size={"cpus": 2, "memoryMb": 10**9, "storageGb": 10}), "dev",
     ["gaia-db:size.memoryMb", "1000000000", "from 256 to 786432"]),
    ("storage too small", base(size={"cpus": 2, "memoryMb": 1024, "storageGb": 1}), "dev",
     ["gaia-db:size.storageGb", "from 10 to 65536"]),
    ("size with unknown field", base(size={"cpus": 2, "memoryMb": 1024, "storageGb": 10, "iops": 3000}), "dev",
     ["gaia-db:size", "iops is not a field", "cpus, memoryMb, storageGb"]),
    ("size missing a field", base(size={"cpus": 2, "memoryMb": 1024}), "dev", ["gaia-db:size", "lacks storageGb"]),
    ("size not an object", base(size="large"), "dev", ["gaia-db:size", '"large"', "an object with cpus"]),
    ("fractional cpus", base(size={"cpus": 1.5, "memoryMb": 1024, "storageGb": 10}), "dev",
     ["gaia-db:size.cpus", "1.5", "integer"]),
    ("size no Cloud SQL tier meets", base("gcp", size={"cpus": 2, "memoryMb": 700000, "storageGb": 10}), "dev",
     ["gaia-db:size", "Cloud SQL", "6.5 GB per vCPU", "on gcp"]),
    ("size no Fly preset meets", base("fly", size={"cpus": 32, "memoryMb": 4096, "storageGb": 10}), "dev",
     ["gaia-db:size", "Fly Machine", "on fly"]),
    ("too many replicas", base(readReplicas=6), "dev", ["gaia-db:readReplicas", "6", "from 0 to 5"]),
    ("negative replicas", base(readReplicas=-1), "dev", ["gaia-db:readReplicas", "-1", "from 0 to 5"]),
    ("replicas as boolean", base(readReplicas=True), "dev", ["gaia-db:readReplicas", "true", "integer"]),
    ("replicas as words", base(readReplicas="two"), "dev", ["gaia-db:readReplicas", '"two"', "integer"]),
    ("retention zero", base(backupRetentionDays=0), "dev", ["gaia-db:backupRetentionDays", "0", "from 1 to 35"]),
    ("retention too long", base(backupRetentionDays=36), "dev", ["gaia-db:backupRetentionDays", "36", "from 1 to 35"]),
    ("pool missing overflow", base(pool={"size": 5}), "dev", ["gaia-db:pool", "lacks maxOverflow"]),
    ("pool size zero", base(pool={"size": 0, "maxOverflow": 1}), "dev", ["gaia-db:pool.size", "from 1 to 500"]),
    ("database name with a dash", base(databaseName="llm-platform"), "dev",
     ["gaia-db:databaseName", '"llm-platform"', "identifier"]),
    ("fly without a token", base("fly"), "dev", ["gaia-db:flyApiToken", "not set", "--secret"]),
    ("fly without org", {"provider": "fly", "adminEmail": "a@b.co", "fly": {"region": "lax"}}, "dev",
     ["gaia-db:fly", "lacks org"]),
    ("fly bad region", base("fly", fly={"org": "gaia", "region": "Los Angeles"}), "dev",
     ["gaia-db:fly.region", '"Los Angeles"', "three-letter"]),
    ("fly unknown flavor", base("fly", fly={"org": "gaia", "flavor": "supabase"}), "dev",
     ["gaia-db:fly.flavor", '"supabase"', "postgres, mpg"]),
    ("fly app name with capitals", base("fly", fly={"org": "gaia", "appName": "Gaia-DB"}), "dev",
     ["gaia-db:fly.appName", '"Gaia-DB"', "Fly.io app name"]),
    ("fly app name ending in a dash", base("fly", fly={"org": "gaia", "appName": "gaia-db-"}), "dev",
     ["gaia-db:fly.appName", '"gaia-db-"', "not ending with a dash"]),
    ("section of another provider", base("aws", fly={"org": "gaia"}), "dev", ["gaia-db:fly", "provider is aws"]),
    ("aws subnets without vpc", base(aws={"subnetIds": ["subnet-0123abcd", "subnet-4567abcd"]}), "dev",
     ["gaia-db:aws.subnetIds", "aws.vpcId"]),
    ("aws one subnet", base(aws={"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd"]}), "dev",
     ["gaia-db:aws.subnetIds", "at least two"]),
    ("aws malformed vpc", base(aws={"vpcId": "my-vpc"}), "dev", ["gaia-db:aws.vpcId", '"my-vpc"', "vpc-0123abcd"]),
    ("aws open to the internet", base(aws={"allowedCidrs": ["0.0.0.0/0"]}), "dev",
     ["gaia-db:aws.allowedCidrs[0]", '"0.0.0.0/0"', "never open to the whole internet"]),
    ("aws malformed cidr", base(aws={"allowedCidrs": ["10.0.0.300/8"]}), "dev",
     ["gaia-db:aws.allowedCidrs[0]", "CIDR block"]),
    ("aws cidrs not a list", base(aws={"allowedCidrs": "10.0.0.0/8"}), "dev", ["gaia-db:aws.allowedCidrs", "list"]),
    ("gcp malformed network", base("gcp", gcp={"privateNetwork": "default"}), "dev",
     ["gaia-db:gcp.privateNetwork", '"default"', "projects/"]),
    ("local port too low", base("local", local={"port": 80}), "dev", ["gaia-db:local.port", "80", "from 1024"]),
    ("local port leaves no room for replicas", base("local", readReplicas=2, local={"port": 65535}), "dev",
     ["gaia-db:local.port", "from 1024 to 65533"]),
    ("misspelt key", base(readReplica=2), "dev", ["gaia-db:readReplica", "not a gaia-db setting", "readReplicas"]),
    ("release url with credentials", base(releaseUrl="postgresql://admin:hunter2@127.0.0.1:15432"), "dev",
     ["gaia-db:releaseUrl", '"(not shown)"', "without user, password or database"]),
    ("release url with credentials and a bad port", base(releaseUrl="postgresql://u:hunter2@127.0.0.1:abc"), "dev",
     ["gaia-db:releaseUrl", '"(not shown)"']),
    ("release url with a password parameter", base(releaseUrl="postgresql://127.0.0.1:15432?password=hunter2"), "dev",
     ["gaia-db:releaseUrl", '"(not shown)"']),
    ("release url with a database", base(releaseUrl="postgresql://127.0.0.1:15432/llm_platform"), "dev",
     ["gaia-db:releaseUrl", "without user, password or database"]),
    ("release url without a port", base(releaseUrl="postgresql://127.0.0.1"), "dev",
     ["gaia-db:releaseUrl", "postgresql://HOST:PORT"]),
    ("release url bad sslmode", base(releaseUrl="postgresql://127.0.0.1:15432?sslmode=always"), "dev",
     ["gaia-db:releaseUrl", "sslmode must be one of disable"]),
    ("admin key version zero", base(adminKeyVersion=0), "dev", ["gaia-db:adminKeyVersion", "from 1"]),
]


@pytest.mark.parametrize(("case", "raw", "stack", "fragments"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_config_fails_with_one_sentence(
    case: str, raw: dict[str, Any], stack: str, fragments: list[str]
) -> None:
    with pytest.raises(SettingsError) as caught:
        parse(raw, stack=stack, fly_api_token=None) if case == "fly without a token" else parse(raw, stack=stack)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{message!r} lacks {fragment!r}"
    assert message.endswith(".") and "\n" not in message
    assert "Traceback" not in message and "hunter2" not in message


def test_release_url_names_only_the_tunnel() -> None:
    s = parse(base(releaseUrl="postgresql://localhost:15432?sslmode=disable"))
    assert s.release_tunnel is not None
    assert (s.release_tunnel.host, s.release_tunnel.port, s.release_tunnel.sslmode) == ("localhost", 15432, "disable")
    assert "hunter2" not in repr(s)


def test_a_token_on_a_non_fly_stack_is_refused() -> None:
    with pytest.raises(SettingsError, match="gaia-db:flyApiToken is set, but this stack's provider is aws"):
        parse(base("aws"), fly_api_token=token())


def test_settings_error_is_a_clean_pulumi_run_error() -> None:
    # pulumi.RunError is how a program stops with its message alone, without the traceback.
    assert issubclass(SettingsError, pulumi.RunError)
