"""The real program (`__main__.py` + the real stack files) under the mock engine, for every stack x provider.

Every documented number and flag is read back from the declared resources' inputs, and the stack outputs are
checked for their names, values and secretness.
"""

from __future__ import annotations

import re

import pulumi
import pytest
from program import Declared, Evaluation, evaluate, provider_config, run_error, stack_config

from components.settings import TIERS
from components.sizing import cloudsql_tier, rds_instance_class
from dbops.names import ADMIN_KEY_PREFIX
from dbops.seed import generate_key
from dbops.urls import build_url, parse_url

ENVS = ("dev", "staging", "prod")
CLOUDS = ("aws", "gcp", "fly")
RDS = "aws:rds/instance:Instance"
CLOUDSQL = "gcp:sql/databaseInstance:DatabaseInstance"
PLAIN_OUTPUTS = {"host", "port", "databaseName", "provider", "environment", "pool", "caCertificate"}
SECRET_OUTPUTS = {"databaseUrl", "readerUrls", "serviceReaderUrls", "serviceUrls", "adminApiKey", "poolerUrls"}
SERVICES = ("analytics", "chat", "assets", "auth")


_cache: dict[tuple[str, str, bool], Evaluation] = {}


def program(env: str, provider: str, preview: bool = False) -> Evaluation:
    key = (env, provider, preview)
    if key not in _cache:
        _cache[key] = evaluate(env, provider_config(env, provider), preview=preview)
    return _cache[key]


# provider -> (database name, admin user for env, sslmode)
CONNECTION = {
    "aws": ("llm_platform", "gaia_{env}", "verify-full"),  # the endpoint is in RDS's certificate (docs/tls.md)
    "gcp": ("llm_platform", "gaia_{env}", "verify-ca"),  # the per-instance CA's certificates name no host
    "fly": ("postgres", "postgres", "disable"),  # unmanaged Fly Postgres: no TLS, WireGuard private network
}


@pytest.mark.parametrize("preview", [False, True], ids=["update", "preview"])
@pytest.mark.parametrize("provider", CLOUDS)
@pytest.mark.parametrize("env", ENVS)
def test_stack_outputs_are_the_contract_and_credentials_are_secret(env: str, provider: str, preview: bool) -> None:
    ev = program(env, provider, preview)
    extra = {"databaseSocketUrl"} if provider == "gcp" else set()
    assert set(ev.outputs) == PLAIN_OUTPUTS | SECRET_OUTPUTS | extra
    assert ev.secret_outputs == SECRET_OUTPUTS | extra
    tier = TIERS[env]  # type: ignore[index]
    database, user, sslmode = CONNECTION[provider]
    user = user.format(env=env)
    assert ev.outputs["provider"] == provider and ev.outputs["environment"] == env
    assert ev.outputs["pool"] == {"size": tier.pool.size, "maxOverflow": tier.pool.max_overflow}
    assert ev.outputs["databaseName"] == database and ev.outputs["port"] == 5432
    assert ev.outputs["databaseUrl"] == build_url(
        user=user, password=f"pw-gaia-db-{env}-admin-password-xxxxxxxx", host=ev.outputs["host"], port=5432,
        database=database, sslmode=sslmode,
    )
    assert len(ev.outputs["readerUrls"]) == tier.read_replicas
    assert all(url.endswith(f"/{database}?sslmode={sslmode}") for url in ev.outputs["readerUrls"])
    assert set(ev.outputs["serviceUrls"]) == set(SERVICES)
    for service, url in ev.outputs["serviceUrls"].items():
        assert url == build_url(
            user=f"gaia_{service}", password=f"pw-gaia-db-{env}-{service}-password-xxxxxxxx",
            host=ev.outputs["host"], port=5432, database=database, sslmode=sslmode,
        )
    # The same format as the CLI's key (dbops.seed.generate_key): gaia_ + random (issue 14, finding 11).
    assert ev.outputs["adminApiKey"] == f"gaia_pw-gaia-db-{env}-admin-api-key-xxxxxxxx"
    assert ev.outputs["adminApiKey"].startswith(ADMIN_KEY_PREFIX) and generate_key().startswith(ADMIN_KEY_PREFIX)


def assert_readers_are_never_the_admin(ev: Evaluation, env: str, replicas: int) -> None:
    """readerUrls log in as gaia_reader and serviceReaderUrls as each service, on every replica; no reader URL holds
    the admin's login or password (issue 10, item 4)."""
    admin = parse_url(ev.outputs["databaseUrl"])
    readers = [parse_url(url) for url in ev.outputs["readerUrls"]]
    assert len(readers) == replicas
    for reader in readers:
        assert (reader.user, reader.password) == ("gaia_reader", f"pw-gaia-db-{env}-reader-password-xxxxxxxx")
        assert (reader.database, reader.sslmode) == (admin.database, admin.sslmode)
    assert set(ev.outputs["serviceReaderUrls"]) == set(SERVICES)
    for service, urls in ev.outputs["serviceReaderUrls"].items():
        logins = [parse_url(url) for url in urls]
        assert [(x.host, x.port, x.database, x.sslmode) for x in logins] == [
            (r.host, r.port, r.database, r.sslmode) for r in readers
        ]
        assert {(x.user, x.password) for x in logins} <= {
            (f"gaia_{service}", f"pw-gaia-db-{env}-{service}-password-xxxxxxxx")
        }
    every_reader_url = [*ev.outputs["readerUrls"], *(u for us in ev.outputs["serviceReaderUrls"].values() for u in us)]
    assert every_reader_url or replicas == 0
    for url in every_reader_url:
        assert admin.password not in url and f"{admin.user}:" not in url


@pytest.mark.parametrize("provider", CLOUDS)
@pytest.mark.parametrize("env", ENVS)
def test_reader_urls_log_in_as_gaia_reader_and_each_service_on_every_replica(env: str, provider: str) -> None:
    assert_readers_are_never_the_admin(program(env, provider), env, TIERS[env].read_replicas)  # type: ignore[index]


@pytest.mark.parametrize("provider", [*CLOUDS, "local"])
def test_a_stack_with_replicas_gives_every_replica_a_reader_and_service_logins(provider: str) -> None:
    ev = evaluate("dev", provider_config("dev", provider, readReplicas=2))
    assert_readers_are_never_the_admin(ev, "dev", 2)


def _credentials(ev: Evaluation) -> list[Declared]:
    return ev.of_type("random:index/randomPassword:RandomPassword")


@pytest.mark.parametrize("provider", CLOUDS)
def test_credentials_are_random_and_the_admin_key_rotates_with_its_version(provider: str) -> None:
    ev = program("dev", provider)
    names = sorted(r.name.removeprefix("gaia-db-dev-") for r in _credentials(ev))
    assert names == sorted(["admin-password", "admin-api-key", "reader-password", *(f"{s}-password" for s in SERVICES),
                            *(f"{s}-alt-password" for s in SERVICES)])  # the second logins (credentialsVersion)
    for secret in _credentials(ev):
        assert "result" in secret.additional_secret_outputs
        assert secret.inputs["length"] >= 40 and secret.inputs["special"] is False
    key = ev.one("random:index/randomPassword:RandomPassword", "admin-api-key")
    assert key.inputs["keepers"] == {"version": "1"}
    bumped = evaluate("dev", provider_config("dev", provider, adminKeyVersion=2))
    rotated = bumped.one("random:index/randomPassword:RandomPassword", "admin-api-key")
    assert rotated.inputs["keepers"] == {"version": "2"}


# --- AWS RDS ---

def _windows_overlap(backup: str, maintenance: str) -> bool:
    def minutes(hhmm: str) -> int:
        hours, mins = hhmm.split(":")
        return int(hours) * 60 + int(mins)

    b_start, b_end = (minutes(t) for t in backup.split("-"))
    m_start, m_end = (minutes(t.split(":", 1)[1]) for t in maintenance.split("-"))
    return b_start < m_end and m_start < b_end


@pytest.mark.parametrize("env", ENVS)
def test_rds_primary_has_the_tier_and_every_safety_setting(env: str) -> None:
    ev = program(env, "aws")
    tier, prod = TIERS[env], env == "prod"  # type: ignore[index]
    primary = ev.one(RDS, "primary")
    i = primary.inputs
    # The major version is pinned (gaia-db:majorVersion) and kept past standard support in prod (Extended Support),
    # so allowing a major upgrade only lets a raised majorVersion through (test_cloud_options.py).
    assert i["engine"] == "postgres" and i["engineVersion"] == "16" and i["allowMajorVersionUpgrade"] is True
    assert i["engineLifecycleSupport"] == ("open-source-rds-extended-support" if prod
                                           else "open-source-rds-extended-support-disabled")
    assert i["instanceClass"] == rds_instance_class(tier.size, production=prod,
                                                    connections=tier.pool.connections_needed)
    # RDS for PostgreSQL on gp3 starts at 20 GiB, above the dev tier's 10 GB.
    assert i["allocatedStorage"] == max(tier.size.storage_gb, 20)
    assert i["storageType"] == "gp3" and i["maxAllocatedStorage"] >= 1.1 * i["allocatedStorage"]
    assert i["storageEncrypted"] is True and i["publiclyAccessible"] is False
    assert i["backupRetentionPeriod"] == {"dev": 1, "staging": 3, "prod": 7}[env]
    assert not _windows_overlap(i["backupWindow"], i["maintenanceWindow"])
    assert i["multiAz"] is prod and i["deletionProtection"] is prod and i["performanceInsightsEnabled"] is prod
    assert set(i["enabledCloudwatchLogsExports"]) == {"postgresql", "upgrade"}
    assert i["dbName"] == "llm_platform" and i["username"] == f"gaia_{env}" and i["identifier"] == f"gaia-{env}"
    assert "password" in primary.secret_inputs
    if env == "dev":
        assert i["skipFinalSnapshot"] is True and "finalSnapshotIdentifier" not in i
    else:
        assert i["skipFinalSnapshot"] is False
        # Unique per instance generation: a RandomId keyed on every input that replaces the instance.
        assert re.fullmatch(rf"gaia-{env}-final-[0-9a-f]{{8}}", i["finalSnapshotIdentifier"])
    assert primary.protect is (env != "dev")  # tests/unit/test_portability.py: every stateful resource outside dev


@pytest.mark.parametrize("env", ENVS)
def test_rds_replicas_follow_the_primary(env: str) -> None:
    ev = program(env, "aws")
    primary = ev.one(RDS, "primary")
    replicas = [r for r in ev.of_type(RDS) if r is not primary]
    assert len(replicas) == TIERS[env].read_replicas  # type: ignore[index]
    for replica in replicas:
        assert replica.inputs["replicateSourceDb"] == "gaia-" + env
        assert replica.inputs["instanceClass"] == primary.inputs["instanceClass"]
        assert replica.inputs["storageEncrypted"] is True and replica.inputs["publiclyAccessible"] is False
        assert replica.inputs["parameterGroupName"] == primary.inputs["parameterGroupName"]
        assert "password" not in replica.inputs
        assert replica.protect is (env != "dev")


def test_rds_parameter_group_forces_tls_and_loads_pg_stat_statements() -> None:
    group = program("staging", "aws").one("aws:rds/parameterGroup:ParameterGroup")
    assert group.inputs["family"] == "postgres16"
    parameters = {p["name"]: (p["value"], p["applyMethod"]) for p in group.inputs["parameters"]}
    assert parameters == {
        "rds.force_ssl": ("1", "immediate"),
        "shared_preload_libraries": ("pg_stat_statements", "pending-reboot"),  # static: needs a reboot
        "log_min_duration_statement": ("100", "immediate"),
        "max_connections": ("225", "pending-reboot"),  # db.t4g.small's 2 GiB / 9531392 bytes: static, so reboot
    }


def test_rds_network_defaults_to_the_default_vpc_and_its_own_cidr() -> None:
    ev = program("dev", "aws")
    group = ev.one("aws:ec2/securityGroup:SecurityGroup")
    assert group.inputs["vpcId"] == "vpc-0default00000000"
    [rule] = group.inputs["ingress"]
    assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 5432, 5432)
    assert rule["cidrBlocks"] == ["172.31.0.0/16"] and not rule.get("securityGroups")
    assert "egress" not in group.inputs or not group.inputs["egress"]
    subnets = ev.one("aws:rds/subnetGroup:SubnetGroup")
    assert subnets.inputs["subnetIds"] == ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]


def test_rds_network_admits_only_the_configured_sources() -> None:
    aws = {"vpcId": "vpc-0123abcd", "subnetIds": ["subnet-0123abcd", "subnet-4567abcd"],
           "allowedCidrs": ["10.8.0.0/16"], "allowedSecurityGroupIds": ["sg-0123abcd"]}
    ev = evaluate("prod", provider_config("prod", "aws", aws=aws))
    group = ev.one("aws:ec2/securityGroup:SecurityGroup")
    assert group.inputs["vpcId"] == "vpc-0123abcd"
    [rule] = group.inputs["ingress"]
    assert rule["cidrBlocks"] == ["10.8.0.0/16"] and rule["securityGroups"] == ["sg-0123abcd"]
    assert ev.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"] == aws["subnetIds"]
    # Naming only security groups admits only them: no CIDR, not even the VPC's own.
    only_groups = {key: value for key, value in aws.items() if key != "allowedCidrs"}
    group = evaluate("prod", provider_config("prod", "aws", aws=only_groups)).one("aws:ec2/securityGroup:SecurityGroup")
    [rule] = group.inputs["ingress"]
    assert not rule.get("cidrBlocks") and rule["securityGroups"] == ["sg-0123abcd"]


# --- Cloud SQL ---

@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_primary_has_the_tier_backups_and_tls(env: str) -> None:
    ev = program(env, "gcp")
    tier, prod = TIERS[env], env == "prod"  # type: ignore[index]
    primary = next(r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" not in r.inputs)
    i, s = primary.inputs, primary.inputs["settings"]
    assert i["databaseVersion"] == "POSTGRES_16" and i["name"] == f"gaia-{env}"
    assert s["edition"] == "ENTERPRISE" and s["tier"] == cloudsql_tier(tier.size, tier.pool.connections_needed)
    assert s["diskSize"] == tier.size.storage_gb and s["diskAutoresize"] is True
    backup = s["backupConfiguration"]
    assert backup["enabled"] is True
    assert backup["pointInTimeRecoveryEnabled"] is (env != "dev")
    # The API wants retained backups > log days: one more daily backup than the window's log days.
    assert backup["transactionLogRetentionDays"] == {"dev": 1, "staging": 3, "prod": 7}[env]
    retention = backup["backupRetentionSettings"]
    assert retention == {"retainedBackups": {"dev": 2, "staging": 4, "prod": 8}[env], "retentionUnit": "COUNT"}
    ip = s["ipConfiguration"]
    assert ip["sslMode"] == "ENCRYPTED_ONLY" and not ip.get("authorizedNetworks") and ip["ipv4Enabled"] is True
    assert {"name": "log_min_duration_statement", "value": "100"} in s["databaseFlags"]
    assert s["insightsConfig"]["queryInsightsEnabled"] is True
    assert s["availabilityType"] == ("REGIONAL" if prod else "ZONAL")
    assert i["deletionProtection"] is prod and s["deletionProtectionEnabled"] is prod
    assert primary.protect is (env != "dev")


@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_replicas_database_and_admin_user(env: str) -> None:
    ev = program(env, "gcp")
    replicas = [r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" in r.inputs]
    assert len(replicas) == TIERS[env].read_replicas  # type: ignore[index]
    for replica in replicas:
        assert replica.inputs["masterInstanceName"] == f"gaia-{env}"
        assert replica.inputs["settings"]["edition"] == "ENTERPRISE"
        assert replica.inputs["settings"]["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    database = ev.one("gcp:sql/database:Database")
    assert database.inputs["name"] == "llm_platform" and database.inputs["instance"] == f"gaia-{env}"
    user = ev.one("gcp:sql/user:User")
    assert user.inputs["deletionPolicy"] == "ABANDON" and user.inputs["name"] == f"gaia_{env}"
    assert "password" in user.secret_inputs
    socket_url = ev.outputs["databaseSocketUrl"]
    assert socket_url.endswith(f"@/llm_platform?host=/cloudsql/gaia-project:us-west1:gaia-{env}")


def test_cloudsql_private_network_removes_the_public_ip() -> None:
    network = "projects/gaia-project/global/networks/gaia-vpc"
    ev = evaluate("staging", provider_config("staging", "gcp", gcp={"privateNetwork": network}))
    for instance in ev.of_type(CLOUDSQL):
        ip = instance.inputs["settings"]["ipConfiguration"]
        assert ip["ipv4Enabled"] is False and ip["privateNetwork"] == network
    assert ev.outputs["host"] == "10.10.0.5"


# --- errors reach the user as one sentence, before any resource is declared ---

def test_a_bad_value_stops_the_program_before_any_resource() -> None:
    message = run_error("dev", provider_config("dev", "aws", readReplicas=9))
    assert message == "gaia-db:readReplicas is 9, but it must be an integer from 0 to 5."


def test_a_misspelt_key_in_the_stack_file_is_reported() -> None:
    config = provider_config("dev", "aws")
    config["gaia-db:backupRetention"] = "3"
    assert "gaia-db:backupRetention is not a gaia-db setting" in run_error("dev", config)


def test_a_fly_token_stored_in_plain_text_is_refused() -> None:
    config = provider_config("dev", "fly")  # the token set without --secret: the CLI would not mark it secret
    try:
        evaluate("dev", config, secret_keys=())
    except pulumi.RunError as error:
        assert "gaia-db:flyApiToken is stored in plain text" in str(error)
        assert "fly-api-token-value" not in str(error)
    else:
        raise AssertionError("a plain-text token was accepted")


def test_an_admin_password_stored_in_plain_text_is_refused() -> None:
    config = provider_config("dev", "fly", adminPassword="existing-postgres-password")
    try:
        evaluate("dev", config, secret_keys=("gaia-db:flyApiToken",))
    except pulumi.RunError as error:
        assert "gaia-db:adminPassword is stored in plain text" in str(error)
        assert "existing-postgres-password" not in str(error)
    else:
        raise AssertionError("a plain-text admin password was accepted")


@pytest.mark.parametrize("provider", ["fly", "aws", "gcp", "local"])
def test_an_adopted_database_keeps_its_admin_password(provider: str) -> None:
    ev = evaluate("dev", provider_config("dev", provider, adminPassword="existing-admin-password"))
    assert "existing-admin-password" in ev.outputs["databaseUrl"] and "databaseUrl" in ev.secret_outputs
    # The generated one is still declared, so handing over to it later is a config change only.
    assert any(r.name.endswith("-admin-password") for r in ev.of_type("random:index/randomPassword:RandomPassword"))


def test_cloudsql_keeps_at_most_seven_days_of_logs_for_a_longer_retention() -> None:
    ev = evaluate("prod", provider_config("prod", "gcp", backupRetentionDays=14))
    primary = next(r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" not in r.inputs)
    backup = primary.inputs["settings"]["backupConfiguration"]
    assert backup["transactionLogRetentionDays"] == 7
    assert backup["backupRetentionSettings"]["retainedBackups"] == 14  # already more than the 7 log days


def test_rds_groups_are_auto_named_so_a_replacement_can_create_before_delete() -> None:
    ev = program("prod", "aws")
    for typ in ("aws:rds/subnetGroup:SubnetGroup", "aws:ec2/securityGroup:SecurityGroup",
                "aws:rds/parameterGroup:ParameterGroup"):
        assert "name" not in ev.one(typ).inputs, typ


def test_a_fly_stack_without_its_token_is_refused() -> None:
    config = stack_config("dev")  # the real dev stack file: fly, and the token is set with `pulumi config set --secret`
    assert "gaia-db:flyApiToken is not set" in run_error("dev", config)


# --- the post-deploy release ---

RELEASE = "pulumi-python:dynamic/gaia:Release"


@pytest.mark.parametrize("preview", [False, True], ids=["update", "preview"])
@pytest.mark.parametrize("provider", CLOUDS)
@pytest.mark.parametrize("env", ENVS)
def test_the_release_follows_the_database_with_its_secrets_wrapped(env: str, provider: str, preview: bool) -> None:
    from dbops.revisions import head_revision

    ev = program(env, provider, preview)
    release = ev.one(RELEASE)
    assert {"connectionUrl", "rolePasswords", "adminApiKey"} <= release.secret_inputs
    assert {"environment", "adminEmail", "migrationHead", "endpoint"}.isdisjoint(release.secret_inputs)
    assert release.inputs["migrationHead"] == head_revision()
    assert release.inputs["environment"] == env and release.inputs["adminEmail"] == ev_admin_email(env)
    if "gaia-db:releaseUrl" not in provider_config(env, provider):
        assert release.inputs["connectionUrl"] == ev.outputs["databaseUrl"]
    else:  # the stack file's tunnel (fly proxy on 127.0.0.1:15432): the database's own login, through the tunnel
        login = ev.outputs["databaseUrl"].rsplit("@", 1)[0] + "@"
        assert release.inputs["connectionUrl"].startswith(login) and ":15432/" in release.inputs["connectionUrl"]
        assert "127.0.0.1" in release.inputs["connectionUrl"]
    # One mechanism for every managed login: the services, the reader, the services' second logins.
    assert set(release.inputs["rolePasswords"]) == {*SERVICES, "reader", *(f"{s}_alt" for s in SERVICES)}
    assert release.additional_secret_outputs == ["credentialsFingerprint", "passwordDigests"]
    # It waits for the primary, every replica (Fly: the cluster command makes them all and sets the password) and
    # every credential.
    if provider == "fly":
        database = {r.urn for r in ev.of_type("command:local:Command")}
        assert len(database) == 2
    else:
        database = {r.urn for r in ev.of_type(RDS if provider == "aws" else CLOUDSQL)}
        assert len(database) == 1 + TIERS[env].read_replicas  # type: ignore[index]
    credentials = {r.urn for r in _credentials(ev)}
    assert len(credentials) == 11  # admin password and key, 4 services x 2 logins, the reader
    assert database | credentials <= set(release.dependencies)


def ev_admin_email(env: str) -> str:
    return "admin@gaia.com" if env == "prod" else f"admin@{env}.gaia.com"


def test_the_release_can_go_through_a_tunnel_while_outputs_keep_the_real_host() -> None:
    ev = evaluate("dev", provider_config("dev", "aws", releaseUrl="postgresql://127.0.0.1:15432?sslmode=require"))
    release = ev.one(RELEASE)
    # The socket goes to the tunnel (libpq hostaddr); the host name stays the endpoint's (docs/tls.md, "Tunnels").
    assert release.inputs["connectionUrl"].endswith("@gaia-dev.c0ffee.us-west-2.rds.amazonaws.com:15432/llm_platform"
                                                    "?sslmode=require&hostaddr=127.0.0.1")
    assert release.inputs["endpoint"] == "gaia-dev.c0ffee.us-west-2.rds.amazonaws.com:5432/llm_platform"
    assert ev.outputs["databaseUrl"].endswith("@gaia-dev.c0ffee.us-west-2.rds.amazonaws.com:5432/llm_platform"
                                              "?sslmode=verify-full")
