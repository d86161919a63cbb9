"""Connection pooling (issue 19) under the mock engine: `poolerUrls` per provider, RDS Proxy's declaration and secrets,
the local pooler's Command and `local.poolerPort`.

The local PgBouncer runs for real in tests/e2e/test_local_pooler.py; here is what the program declares.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from program import Evaluation, evaluate, provider_config, stack_config
from test_lifecycle import Scenario, run
from test_settings import base, parse

from components.settings import SettingsError
from dbops.names import SERVICES
from dbops.urls import parse_url

PROXY = "aws:rds/proxy:Proxy"
TARGET = "aws:rds/proxyTarget:ProxyTarget"
GROUP = "aws:rds/proxyDefaultTargetGroup:ProxyDefaultTargetGroup"
SECRET = "aws:secretsmanager/secret:Secret"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
SG = "aws:ec2/securityGroup:SecurityGroup"
RDS = "aws:rds/instance:Instance"
LOGINS = sorted([f"gaia_{s}" for s in SERVICES] + [f"gaia_{s}_alt" for s in SERVICES])


def program(env: str, provider: str, **extra: Any) -> Evaluation:
    return evaluate(env, provider_config(env, provider, **extra))


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
@pytest.mark.parametrize("provider", ["fly", "gcp", "aws"])
def test_no_pooler_means_empty_pooler_urls(env: str, provider: str) -> None:
    ev = program(env, provider)
    assert ev.outputs["poolerUrls"] == {} and "poolerUrls" in ev.secret_outputs
    assert set(ev.outputs["serviceUrls"]) == set(SERVICES)  # the direct URLs are unchanged


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_aws_pooler_urls_go_through_rds_proxy_with_tls_and_the_system_roots(env: str) -> None:
    ev = program(env, "aws", aws={"proxy": True})
    (proxy,) = ev.of_type(PROXY)
    assert proxy.inputs["engineFamily"] == "POSTGRESQL" and proxy.inputs["requireTls"] is True
    assert proxy.inputs["name"] == f"gaia-{env}-proxy"
    assert "poolerUrls" in ev.secret_outputs
    assert set(ev.outputs["poolerUrls"]) == set(SERVICES)
    for service, url in ev.outputs["poolerUrls"].items():
        direct, pooled = parse_url(ev.outputs["serviceUrls"][service]), parse_url(url)
        assert (pooled.user, pooled.password) == (direct.user, direct.password)
        assert pooled.host != direct.host  # the proxy's endpoint, not the instance's
        assert url.endswith("?sslmode=verify-full&sslrootcert=system"), url
    # The proxy fronts the primary alone: one target, the primary's identifier, never a replica.
    (target,) = ev.of_type(TARGET)
    assert target.inputs["dbInstanceIdentifier"] == f"gaia-{env}"
    assert target.inputs["targetGroupName"] == ev.one(GROUP).inputs.get("name", target.inputs["targetGroupName"])


def test_rds_proxy_logs_in_with_one_secret_per_login_readable_by_its_role_only() -> None:
    ev = program("staging", "aws", readReplicas=1, aws={"proxy": True})
    proxy = ev.one(PROXY)
    secrets = [r for r in ev.of_type(SECRET) if "-proxy-" in r.name]
    assert sorted(r.name.rsplit("-proxy-", 1)[1] for r in secrets) == LOGINS  # both logins of every service
    auths = proxy.inputs["auths"]
    assert sorted(a["description"] for a in auths) == LOGINS
    assert {(a["authScheme"], a["iamAuth"], a["clientPasswordAuthType"]) for a in auths} == {
        ("SECRETS", "DISABLED", "POSTGRES_SCRAM_SHA_256")}
    versions = {r.name.rsplit("-proxy-", 1)[1]: r for r in ev.of_type(VERSION) if "-proxy-" in r.name}
    assert sorted(versions) == LOGINS
    for login, version in versions.items():
        assert "secretString" in version.secret_inputs  # the password is a secret all the way
        assert json.loads(version.inputs["secretString"]) == {
            "username": login, "password": f"pw-gaia-db-staging-{login.removeprefix('gaia_').replace('_alt', '-alt')}"
            "-password-xxxxxxxx"}
    policy = json.loads(ev.one("aws:iam/rolePolicy:RolePolicy", "-proxy-secrets").inputs["policy"])
    (statement,) = policy["Statement"]
    assert statement["Action"] == ["secretsmanager:GetSecretValue"] and len(statement["Resource"]) == len(LOGINS)
    role = json.loads(ev.one("aws:iam/role:Role", "-proxy").inputs["assumeRolePolicy"])
    assert role["Statement"][0]["Principal"] == {"Service": "rds.amazonaws.com"}
    # The budget's release and reserved connections stay direct: the proxy takes at most the rest.
    pool = ev.one(GROUP).inputs["connectionPoolConfig"]
    assert pool["maxConnectionsPercent"] == (225 - 12) * 100 // 225  # db.t4g.small's max_connections


def test_the_database_admits_the_proxy_and_the_proxy_admits_the_clients() -> None:
    ev = program("dev", "aws", aws={"allowedCidrs": ["10.1.0.0/16"], "proxy": True})
    proxy_group = ev.one(SG, "-proxy-sg")
    database_group = ev.one(SG, "gaia-db-dev-sg")
    (rule,) = proxy_group.inputs["ingress"]
    assert rule["cidrBlocks"] == ["10.1.0.0/16"] and rule["fromPort"] == 5432
    (db_rule,) = database_group.inputs["ingress"]
    assert len(db_rule["securityGroups"]) == 1  # the proxy's group
    assert ev.one(PROXY).inputs["vpcSecurityGroupIds"] == db_rule["securityGroups"]


@pytest.mark.parametrize("aws", [{}, {"proxy": False}])
def test_without_aws_proxy_nothing_of_it_is_declared(aws: dict[str, Any]) -> None:
    ev = program("prod", "aws", aws=aws)
    assert ev.outputs["poolerUrls"] == {}
    assert not ev.of_type(PROXY) and not ev.of_type(TARGET) and not [r for r in ev.resources if "proxy" in r.name]


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_turning_the_proxy_on_never_touches_the_instances(env: str) -> None:
    problems = run(env, "aws", Scenario("aws.proxy off -> on", {"readReplicas": 1, "aws": {"proxy": False}},
                                        {"readReplicas": 1, "aws": {"proxy": True}}))
    assert problems == []
    off = program(env, "aws", readReplicas=1, aws={"proxy": False})
    on = program(env, "aws", readReplicas=1, aws={"proxy": True})
    assert [r.inputs for r in off.of_type(RDS)] == [r.inputs for r in on.of_type(RDS)]


def test_local_pooler_urls_and_the_pooler_command() -> None:
    ev = evaluate("local", stack_config("local"))
    (command,) = [r for r in ev.of_type("command:local:Command") if r.name.endswith("-pooler")]
    env = command.inputs["environment"]
    assert env["GAIA_POOLER_PORT"] == "54330" and env["GAIA_POOLER_ROLE"] == "gaia_pooler"
    assert sorted(env["GAIA_POOLER_LOGINS"].split()) == LOGINS  # never the admin or the reader
    assert "environment" not in command.secret_inputs  # no secret reaches it: the auth user's password is made there
    assert "GAIA_ADMIN_PASSWORD" not in env
    assert set(ev.outputs["poolerUrls"]) == set(SERVICES) and "poolerUrls" in ev.secret_outputs
    for service, url in ev.outputs["poolerUrls"].items():
        assert url.split("@")[1].startswith("127.0.0.1:54330/gaia_dev?sslmode=verify-full&sslrootcert=/")
        assert url.endswith("/tls/ca.crt")
        assert parse_url(url).password == parse_url(ev.outputs["serviceUrls"][service]).password


def test_local_pooler_port_defaults_and_refusals() -> None:
    assert parse(base("local")).local.pooler_port == 54330
    assert parse(base("local", local={"port": 6000})).local.pooler_port == 6010
    assert parse(base("local", local={"poolerPort": 7000})).local.pooler_port == 7000
    for bad, allowed in ((54320, "differ from the primary's port"), (54323, "ports its replicas may take"),
                         (80, "integer from 1024 to 65535"), ("x", "integer")):
        with pytest.raises(SettingsError) as refused:
            parse(base("local", local={"poolerPort": bad}))
        assert str(refused.value).startswith("gaia-db:local.poolerPort is ") and allowed in str(refused.value)
    assert parse(base()).aws.proxy is False and parse(base(aws={"proxy": True})).aws.proxy is True
    with pytest.raises(SettingsError, match=r"gaia-db:aws\.proxy is"):
        parse(base(aws={"proxy": "sometimes"}))


def test_every_proxy_resource_that_takes_tags_is_tagged() -> None:
    ev = program("prod", "aws", aws={"proxy": True}, tags={"team": "platform"})
    tagged = [r for r in ev.resources if "proxy" in r.name and r.type in (PROXY, SECRET, SG, "aws:iam/role:Role")]
    assert len(tagged) == 1 + len(LOGINS) + 1 + 1
    for resource in tagged:
        assert resource.inputs["tags"]["team"] == "platform", resource.name
