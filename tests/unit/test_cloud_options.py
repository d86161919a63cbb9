"""Issue 11: the RDS / Cloud SQL options experienced users expect — each key's default per tier, its one-sentence
refusal, what the program declares for it under the mock engine, tags on every taggable resource, and the prod
stack's KMS-backed secrets provider. test_lifecycle.py proves that turning each key on later is an update."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from program import Declared, Evaluation, evaluate, provider_config
from test_settings import base, parse

from components.settings import SECRET_KEYS, SettingsError

ROOT = Path(__file__).resolve().parents[2]
ENVS = ("dev", "staging", "prod")
RDS = "aws:rds/instance:Instance"
CLOUDSQL = "gcp:sql/databaseInstance:DatabaseInstance"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
TOPIC = "arn:aws:sns:us-west-2:123456789012:gaia-db-alerts"
KMS = "arn:aws:kms:us-west-2:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
GCP_KEY = "projects/gaia-project/locations/us-west1/keyRings/db/cryptoKeys/gaia"
CHANNEL = "projects/gaia-project/notificationChannels/1234567890"


def program(env: str, provider: str, **extra: Any) -> Evaluation:
    if provider == "gcp" and env == "prod":
        extra["gcp"] = {"allowPublicIp": True, **extra.get("gcp", {})}
    return evaluate(env, provider_config(env, provider, **extra))


# --- settings: defaults and refusals ---

@pytest.mark.parametrize("env", ENVS)
def test_aws_defaults_per_tier(env: str) -> None:
    aws = parse(base("aws"), stack=env).aws
    prod = env == "prod"
    assert aws.iam_auth is False and aws.kms_key_id is None and aws.alarm_topic_arn is None
    assert aws.engine_lifecycle_support == ("open-source-rds-extended-support" if prod
                                            else "open-source-rds-extended-support-disabled")
    assert aws.ca_cert_identifier == "rds-ca-rsa2048-g1"
    assert aws.performance_insights_retention_days == (7 if prod else 0)
    assert aws.monitoring_interval == (60 if prod else 0)
    assert aws.log_retention_days == (30 if prod else 7)


@pytest.mark.parametrize("env", ENVS)
def test_gcp_defaults_per_tier(env: str) -> None:
    gcp = parse(base("gcp", gcp={"allowPublicIp": True}), stack=env).gcp
    assert gcp.iam_auth is False and gcp.encryption_key_name is None and gcp.query_insights is True
    assert gcp.replica_zones == () and gcp.notification_channels == ()
    assert parse(base("gcp"), stack="dev").major_version == 16


@pytest.mark.parametrize(("provider", "raw", "key", "allowed"), [
    ("aws", {"aws": {"iamAuth": "yes"}}, "aws.iamAuth", "true or false"),
    ("aws", {"aws": {"kmsKeyId": "alias/mine"}}, "aws.kmsKeyId", "KMS key ARN"),
    ("aws", {"aws": {"engineLifecycleSupport": "forever"}}, "aws.engineLifecycleSupport", "one of"),
    ("aws", {"aws": {"caCertIdentifier": "rds-ca-2019"}}, "aws.caCertIdentifier", "rds-ca-rsa2048-g1"),
    ("aws", {"aws": {"performanceInsightsRetentionDays": 30}}, "aws.performanceInsightsRetentionDays",
     "a multiple of 31"),
    ("aws", {"aws": {"monitoringInterval": 20}}, "aws.monitoringInterval", "0 (off), 1, 5"),
    ("aws", {"aws": {"logRetentionDays": 10}}, "aws.logRetentionDays", "CloudWatch Logs retention"),
    ("aws", {"aws": {"alarmTopicArn": "gaia-db-alerts"}}, "aws.alarmTopicArn", "SNS topic ARN"),
    ("gcp", {"gcp": {"iamAuth": 1}}, "gcp.iamAuth", "true or false"),
    ("gcp", {"gcp": {"encryptionKeyName": "gaia"}}, "gcp.encryptionKeyName", "Cloud KMS key"),
    ("gcp", {"gcp": {"encryptionKeyName": GCP_KEY.replace("us-west1", "europe-west1")}}, "gcp.encryptionKeyName",
     "in the instance's region us-west1"),
    ("gcp", {"gcp": {"queryInsights": "on"}}, "gcp.queryInsights", "true or false"),
    ("gcp", {"readReplicas": 2, "gcp": {"replicaZones": ["us-east1-b"]}}, "gcp.replicaZones[0]",
     "a zone of the region us-west1"),
    ("gcp", {"gcp": {"replicaZones": ["us-west1-a"]}}, "gcp.replicaZones", "readReplicas above 0"),
    ("gcp", {"gcp": {"notificationChannels": ["alerts@gaia.com"]}}, "gcp.notificationChannels[0]",
     "notification channel"),
    ("aws", {"majorVersion": 13}, "majorVersion", "from 14 to 17"),
    ("local", {"majorVersion": 17}, "majorVersion", "aws and gcp only"),
    ("aws", {"tags": {"managed-by": "terraform"}}, "tags.managed-by", "which gaia-db sets"),
])
def test_every_bad_value_is_one_sentence(provider: str, raw: dict[str, Any], key: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as error:
        parse(base(provider, **raw))
    message = str(error.value)
    assert message.startswith(f"gaia-db:{key} is ") and allowed in message, message


def test_the_good_values_are_taken() -> None:
    aws = parse(base("aws", aws={
        "iamAuth": True, "kmsKeyId": KMS, "engineLifecycleSupport": "open-source-rds-extended-support",
        "caCertIdentifier": "rds-ca-ecc384-g1", "performanceInsightsRetentionDays": 731, "monitoringInterval": "5",
        "logRetentionDays": 365, "alarmTopicArn": TOPIC,
    })).aws
    assert (aws.iam_auth, aws.kms_key_id, aws.ca_cert_identifier, aws.performance_insights_retention_days,
            aws.monitoring_interval, aws.log_retention_days, aws.alarm_topic_arn) == (
        True, KMS, "rds-ca-ecc384-g1", 731, 5, 365, TOPIC)
    gcp = parse(base("gcp", readReplicas=1, majorVersion=17, gcp={
        "iamAuth": "true", "encryptionKeyName": GCP_KEY, "queryInsights": False, "replicaZones": ["us-west1-c"],
        "notificationChannels": [CHANNEL],
    }))
    assert gcp.major_version == 17 and gcp.gcp.iam_auth and gcp.gcp.encryption_key_name == GCP_KEY
    assert gcp.gcp.replica_zones == ("us-west1-c",) and gcp.gcp.notification_channels == (CHANNEL,)


# --- AWS under the mock engine ---

@pytest.mark.parametrize("env", ENVS)
def test_rds_defaults_declared(env: str) -> None:
    ev = program(env, "aws", readReplicas=1)
    prod = env == "prod"
    for instance in ev.of_type(RDS):
        i = instance.inputs
        assert i["caCertIdentifier"] == "rds-ca-rsa2048-g1" and i["iamDatabaseAuthenticationEnabled"] is False
        assert i["performanceInsightsEnabled"] is prod
        assert i.get("performanceInsightsRetentionPeriod") == (7 if prod else None)
        assert i["monitoringInterval"] == (60 if prod else 0)
        assert "kmsKeyId" not in i
    assert len(ev.of_type("aws:iam/role:Role")) == (1 if prod else 0)
    if prod:
        role = ev.one("aws:iam/role:Role")
        assert all(instance.inputs["monitoringRoleArn"].endswith(role.name + "-1a2b3c4") and
                   role.urn in instance.dependencies for instance in ev.of_type(RDS))
        assert "monitoring.rds.amazonaws.com" in role.inputs["assumeRolePolicy"]
        attachment = ev.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        assert attachment.inputs["policyArn"].endswith("service-role/AmazonRDSEnhancedMonitoringRole")
    assert not ev.of_type(ALARM) and not ev.of_type("aws:rds/eventSubscription:EventSubscription")


@pytest.mark.parametrize("env", ENVS)
def test_rds_log_groups_exist_before_their_instance(env: str) -> None:
    ev = program(env, "aws", readReplicas=2)
    groups = {g.inputs["name"]: g for g in ev.of_type(LOG_GROUP)}
    for instance in ev.of_type(RDS):
        identifier = instance.inputs["identifier"]
        for log in instance.inputs["enabledCloudwatchLogsExports"]:
            group = groups[f"/aws/rds/instance/{identifier}/{log}"]
            assert group.inputs["retentionInDays"] == (30 if env == "prod" else 7)
            assert group.urn in instance.dependencies
    assert len(groups) == 3 * 2


def test_rds_options_on() -> None:
    ev = program("staging", "aws", readReplicas=1, aws={
        "iamAuth": True, "kmsKeyId": KMS, "performanceInsightsRetentionDays": 93, "monitoringInterval": 15,
        "alarmTopicArn": TOPIC, "caCertIdentifier": "rds-ca-rsa4096-g1",
    })
    primary, replica = ev.one(RDS, "primary"), ev.one(RDS, "replica-1")
    for i in (primary.inputs, replica.inputs):
        assert i["iamDatabaseAuthenticationEnabled"] is True and i["caCertIdentifier"] == "rds-ca-rsa4096-g1"
        assert i["performanceInsightsRetentionPeriod"] == 93 and i["performanceInsightsKmsKeyId"] == KMS
        assert i["monitoringInterval"] == 15
    assert primary.inputs["kmsKeyId"] == KMS and "kmsKeyId" not in replica.inputs  # a replica takes its source's
    alarms = {a.inputs["name"]: a.inputs for a in ev.of_type(ALARM)}
    assert set(alarms) == {f"gaia-staging{suffix}-{check}" for suffix in ("", "-replica-1")
                           for check in ("free-storage", "transaction-ids", "connections")} | {
        "gaia-staging-replica-1-replica-lag"}
    for alarm in alarms.values():
        assert alarm["alarmActions"] == [TOPIC] and alarm["namespace"] == "AWS/RDS"
    assert alarms["gaia-staging-free-storage"]["threshold"] == 0.1 * 50 * 1024**3
    assert alarms["gaia-staging-transaction-ids"]["threshold"] == 1_000_000_000
    assert alarms["gaia-staging-replica-1-replica-lag"]["threshold"] == 300
    max_connections = 225  # db.t4g.small (README's connection budget)
    assert alarms["gaia-staging-connections"]["threshold"] == int(0.8 * max_connections)
    events = ev.one("aws:rds/eventSubscription:EventSubscription").inputs
    assert events["snsTopic"] == TOPIC and "backup" in events["eventCategories"]
    assert events["sourceIds"] == ["gaia-staging", "gaia-staging-replica-1"]


@pytest.mark.parametrize("env", ENVS)
def test_rds_engine_lifecycle_and_major_version(env: str) -> None:
    ev = program(env, "aws", majorVersion=17)
    primary = ev.one(RDS, "primary").inputs
    assert primary["engineVersion"] == "17" and primary["allowMajorVersionUpgrade"] is True
    assert ev.one("aws:rds/parameterGroup:ParameterGroup").inputs["family"] == "postgres17"
    assert primary["engineLifecycleSupport"] == ("open-source-rds-extended-support" if env == "prod"
                                                 else "open-source-rds-extended-support-disabled")


# --- GCP under the mock engine ---

def flags(instance: Declared) -> dict[str, str]:
    return {f["name"]: f["value"] for f in instance.inputs["settings"]["databaseFlags"]}


@pytest.mark.parametrize("env", ENVS)
def test_cloudsql_defaults_declared(env: str) -> None:
    ev = program(env, "gcp", readReplicas=1)
    for instance in ev.of_type(CLOUDSQL):
        assert instance.inputs["databaseVersion"] == "POSTGRES_16" and "encryptionKeyName" not in instance.inputs
        assert "cloudsql.iam_authentication" not in flags(instance)
        assert instance.inputs["settings"]["insightsConfig"] == {
            "queryInsightsEnabled": True, "queryStringLength": 1024, "queryPlansPerMinute": 5,
            "recordApplicationTags": True, "recordClientAddress": True,
        }
        assert "locationPreference" not in instance.inputs["settings"]
    assert not ev.of_type(ALERT)


def test_cloudsql_options_on() -> None:
    ev = program("prod", "gcp", readReplicas=3, majorVersion=17, gcp={
        "iamAuth": True, "encryptionKeyName": GCP_KEY, "queryInsights": False,
        "replicaZones": ["us-west1-a", "us-west1-b"], "notificationChannels": [CHANNEL],
    })
    instances = ev.of_type(CLOUDSQL)
    for instance in instances:
        assert instance.inputs["databaseVersion"] == "POSTGRES_17"
        assert instance.inputs["encryptionKeyName"] == GCP_KEY
        assert flags(instance)["cloudsql.iam_authentication"] == "on"
        assert instance.inputs["settings"]["insightsConfig"] == {"queryInsightsEnabled": False}
    zones = [ev.one(CLOUDSQL, f"replica-{i}").inputs["settings"]["locationPreference"]["zone"] for i in (1, 2, 3)]
    assert zones == ["us-west1-a", "us-west1-b", "us-west1-a"]
    policies = {p.name.rsplit("-alert-", 1)[1]: p.inputs for p in ev.of_type(ALERT)}
    assert set(policies) == {"disk", "transaction-ids", "connections", "backups", "replica-lag"}
    for policy in policies.values():
        assert policy["notificationChannels"] == [CHANNEL] and policy["userLabels"]["environment"] == "prod"
        assert 'starts_with("gaia-project:gaia-prod")' in str(policy["conditions"])
    assert "notificationRateLimit" in policies["backups"]["alertStrategy"]


def test_no_replica_lag_policy_without_replicas() -> None:
    ev = program("staging", "gcp", gcp={"notificationChannels": [CHANNEL]})
    assert not [p for p in ev.of_type(ALERT) if p.name.endswith("replica-lag")]


# --- tags / labels on every taggable resource ---

UNTAGGABLE = {"aws:iam/rolePolicyAttachment:RolePolicyAttachment", "gcp:sql/database:Database", "gcp:sql/user:User",
              "gcp:servicenetworking/connection:Connection"}
EXPECTED = {"project": "gaia-db", "managed-by": "pulumi", "team": "platform"}


def labels(resource: Declared) -> dict[str, str] | None:
    i = resource.inputs
    found = i.get("tags") or i.get("labels") or i.get("userLabels") or (i.get("settings") or {}).get("userLabels")
    return found if isinstance(found, dict) else None


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_every_taggable_resource_is_tagged(env: str, provider: str) -> None:
    options: dict[str, Any] = {
        "aws": {"aws": {"alarmTopicArn": TOPIC, "monitoringInterval": 60}},
        "gcp": {"gcp": {"notificationChannels": [CHANNEL], "privateNetwork": "projects/p/global/networks/n"}},
    }[provider]
    ev = program(env, provider, readReplicas=1, tags={"team": "platform"}, **options)
    cloud = [r for r in ev.resources if r.custom and r.type.startswith(f"{provider}:")]
    assert cloud
    for resource in cloud:
        if resource.type in UNTAGGABLE:
            continue
        found = labels(resource)
        assert found == {**EXPECTED, "environment": env}, (resource.type, resource.name, found)


# --- the prod stack's secrets: a KMS-backed secrets provider, and nothing secret in plain text ---

SECRETS_PROVIDER = re.compile(
    r'pulumi stack (?:init prod|change-secrets-provider) (?:--stack prod )?(?:--secrets-provider=)?'
    r'"(awskms://alias/[A-Za-z0-9/_-]+\?region=[a-z0-9-]+|gcpkms://projects/[^/"]+/locations/[^/"]+/keyRings/'
    r'[^/"]+/cryptoKeys/[^/"]+)"'
)


def test_the_prod_secrets_provider_is_documented() -> None:
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text()
    commands = SECRETS_PROVIDER.findall(runbook)
    assert any(c.startswith("awskms://") for c in commands) and any(c.startswith("gcpkms://") for c in commands)
    assert "pulumi stack init prod --secrets-provider=" in runbook
    assert "pulumi stack change-secrets-provider" in runbook
    assert "--secrets-provider" in (ROOT / "Pulumi.prod.yaml").read_text()  # the stack file points to it
    assert "docs/RUNBOOK.md" in (ROOT / "README.md").read_text()


PLAIN_SECRET = re.compile(r"(password|token|secret|apikey|api_key|private)", re.IGNORECASE)


def test_no_prod_secret_is_in_plain_text() -> None:
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text()) or {}
    provider = document.get("secretsprovider")
    assert provider is None or provider.startswith(("awskms://", "gcpkms://")), provider
    for key, value in (document.get("config") or {}).items():
        name = key.split(":", 1)[1]
        if name in SECRET_KEYS or PLAIN_SECRET.search(name):
            assert isinstance(value, dict) and set(value) == {"secure"}, f"{key} is in plain text"
