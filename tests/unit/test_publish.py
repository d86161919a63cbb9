"""`gaia-db:publish` and `gaia-db:credentialsVersion` under the SDK's mock engine (issue 17): per provider x publish
target, what is declared, which inputs are secret, and what a credentialsVersion bump changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from program import Declared, Evaluation, FakeCloud, evaluate, provider_config, run_error

from components.release import password_digests, unchanged_passwords
from dbops.names import SERVICES

PASSWORD = "random:index/randomPassword:RandomPassword"
AWS_SECRET = "aws:secretsmanager/secret:Secret"
AWS_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
AWS_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
GCP_SECRET = "gcp:secretmanager/secret:Secret"
GCP_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
GCP_MEMBER = "gcp:secretmanager/secretIamMember:SecretIamMember"
COMMAND = "command:local:Command"
RELEASE = "pulumi-python:dynamic/gaia:Release"
PROVIDERS = ("aws", "gcp", "fly", "local")
ROLE = "arn:aws:iam::123456789012:role/gaia-chat-runtime"
MEMBER = "serviceAccount:chat@gaia-project.iam.gserviceaccount.com"
TARGETS: dict[str, dict[str, Any]] = {
    "aws": {"aws": {"accessors": {"chat": ROLE}}},
    "gcp": {"gcp": {"accessors": {"chat": MEMBER}}},
    "fly": {"fly": {"apps": {service: f"gaia-{service}-staging" for service in SERVICES}}},
    "github": {"github": {"repository": "gaia-platform/services", "environment": "staging"}},
}
SECRET_KEYS = ("gaia-db:flyApiToken", "gaia-db:releaseUrl", "gaia-db:adminPassword")


def config(provider: str, env: str = "staging", **extra: Any) -> dict[str, Any]:
    cfg = provider_config(env, provider, **extra)
    if "publish" in extra and "fly" in extra["publish"]:
        cfg["gaia-db:flyApiToken"] = "fly-api-token-value"
    if "publish" in extra and "gcp" in extra["publish"]:
        cfg["gcp:project"] = "gaia-project"
    return cfg


def run(provider: str, env: str = "staging", **extra: Any) -> Evaluation:
    return evaluate(env, config(provider, env, **extra), cloud=FakeCloud(), secret_keys=SECRET_KEYS)


def _user(url: str) -> str:
    return url.split("://", 1)[1].split(":", 1)[0]


def _published(ev: Evaluation) -> list[Declared]:
    return [r for r in ev.resources if "-publish" in r.name and r.custom]


def test_nothing_is_published_without_the_key() -> None:
    ev = run("aws")
    assert _published(ev) == [] and "published" not in ev.outputs


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_target_declares_its_resources_with_the_values_secret(provider: str, target: str) -> None:
    ev = run(provider, publish=TARGETS[target], readReplicas=1)
    urls = ev.outputs["serviceUrls"]
    readers = ev.outputs["serviceReaderUrls"]
    published = _published(ev)
    assert published, "nothing declared"
    assert all(r.parent.endswith("::gaia-db-staging-publish") for r in published)
    # Published only once the release has set the passwords.
    component = ev.one("gaia:index:Publish")
    assert ev.one(RELEASE).urn in component.dependencies
    for resource in published:
        text = json.dumps(resource.inputs)
        for service in SERVICES:
            if urls[service] in text:  # wherever a URL travels, the input carrying it is secret
                holder = next(key for key, value in resource.inputs.items() if urls[service] in json.dumps(value))
                assert holder in resource.secret_inputs, (resource.name, holder)
    if target == "aws":
        secrets = ev.of_type(AWS_SECRET)
        assert sorted(s.inputs["namePrefix"] for s in secrets) == sorted(
            f"gaia/staging/{service}/DATABASE_URL-" for service in SERVICES
        )
        # A recovery window, never a forced delete; a name prefix, so a re-created secret never collides.
        assert all(s.inputs["recoveryWindowInDays"] == 7 and "name" not in s.inputs for s in secrets)
        assert all("forceOverwriteReplicaSecret" not in s.inputs for s in secrets)
        versions = {v.name.split("-publish-")[1].removesuffix("-aws-value"): v for v in ev.of_type(AWS_VERSION)}
        for service in SERVICES:
            value = json.loads(versions[service].inputs["secretString"])
            assert value == {"DATABASE_URL": urls[service], "DATABASE_READER_URLS": ",".join(readers[service])}
            assert versions[service].secret_inputs == {"secretString"}
            assert "gaia_reader" not in json.dumps(value)  # the service's own login on the replicas, never the reader
        policy = ev.one(AWS_POLICY)
        assert policy.name.endswith("-chat-aws-policy") and policy.inputs["blockPublicPolicy"] is True
        statement = json.loads(policy.inputs["policy"])["Statement"]
        assert [s["Principal"] for s in statement] == [{"AWS": ROLE}]
        assert statement[0]["Action"] == ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    if target == "gcp":
        ids = sorted(s.inputs["secretId"] for s in ev.of_type(GCP_SECRET))
        assert ids == sorted([f"gaia-staging-{s}-database-url" for s in SERVICES]
                             + [f"gaia-staging-{s}-database-reader-urls" for s in SERVICES])
        assert all(s.inputs["deletionProtection"] is False for s in ev.of_type(GCP_SECRET))
        data = {v.name.split("-publish-")[1].removesuffix("-gcp-value"): v for v in ev.of_type(GCP_VERSION)}
        for service in SERVICES:
            assert data[f"{service}-database-url"].inputs["secretData"] == urls[service]
            assert data[f"{service}-database-reader-urls"].inputs["secretData"] == ",".join(readers[service])
            assert data[f"{service}-database-url"].secret_inputs == {"secretData"}
        members = ev.of_type(GCP_MEMBER)  # the named member of chat only, on chat's two secrets
        assert sorted(m.inputs["secretId"] for m in members) == ["gaia-staging-chat-database-reader-urls",
                                                                 "gaia-staging-chat-database-url"]
        assert {(m.inputs["role"], m.inputs["member"]) for m in members} == {
            ("roles/secretmanager.secretAccessor", MEMBER)}
    if target in ("fly", "github"):
        commands = [r for r in published if r.type == COMMAND]
        for command in commands:
            assert "environment" in command.secret_inputs
            assert set(command.additional_secret_outputs) >= {"stdout", "stderr"}
            for script in ("create", "update", "delete"):  # the values are never in the script text
                assert not any(url in command.inputs[script] for url in urls.values())
        if target == "fly":
            apps = {c.inputs["environment"]["GAIA_PUBLISH_APP"] for c in commands}
            assert apps == {f"gaia-{s}-staging" for s in SERVICES}
            chat = next(c for c in commands if c.name.endswith("-chat-fly"))
            assert chat.inputs["environment"]["GAIA_PUBLISH_VALUES"] == (
                f"DATABASE_URL={urls['chat']}\nDATABASE_READER_URLS={','.join(readers['chat'])}\n")
        else:
            (command,) = commands
            values = command.inputs["environment"]["GAIA_PUBLISH_VALUES"]
            assert f"CHAT_DATABASE_URL={urls['chat']}\n" in values
            assert "GAIA_DB_GITHUB_TOKEN" not in command.inputs["environment"]  # the deployer's, never the stack's


def test_without_replicas_nothing_carries_reader_urls() -> None:
    """No replicas, no reader URLs: no reader secret on GCP (the API refuses an empty version), no
    DATABASE_READER_URLS key in the AWS value nor line for Fly."""
    targets = {name: target for t in ("aws", "gcp", "fly") for name, target in TARGETS[t].items()}
    ev = run("aws", publish=targets, readReplicas=0)
    urls = ev.outputs["serviceUrls"]
    assert sorted(s.inputs["secretId"] for s in ev.of_type(GCP_SECRET)) == sorted(
        f"gaia-staging-{s}-database-url" for s in SERVICES)
    versions = ev.of_type(AWS_VERSION)
    assert len(versions) == len(SERVICES)
    for version in versions:
        service = version.name.split("-publish-")[1].removesuffix("-aws-value")
        assert json.loads(version.inputs["secretString"]) == {"DATABASE_URL": urls[service]}
    (chat,) = [c for c in ev.of_type(COMMAND) if c.name.endswith("-chat-fly")]
    assert chat.inputs["environment"]["GAIA_PUBLISH_VALUES"] == f"DATABASE_URL={urls['chat']}\n"


def test_the_published_values_follow_the_active_login() -> None:
    """A credentialsVersion bump: the second logins' passwords are new (only theirs), and serviceUrls,
    serviceReaderUrls and every published value switch to gaia_<svc>_alt; the next bump switches back."""
    publish = {**TARGETS["aws"], **TARGETS["gcp"], **TARGETS["fly"], **TARGETS["github"]}
    evs = {version: run("aws", publish=publish, readReplicas=1, credentialsVersion=version) for version in (1, 2, 3)}
    keepers = {v: {r.name.removeprefix("gaia-db-staging-"): r.inputs.get("keepers") for r in ev.of_type(PASSWORD)}
               for v, ev in evs.items()}
    moved_12 = {name for name in keepers[1] if keepers[1][name] != keepers[2][name]}
    moved_23 = {name for name in keepers[2] if keepers[2][name] != keepers[3][name]}
    assert moved_12 == {f"{s}-alt-password" for s in SERVICES}  # only the inactive login gets a new password
    assert moved_23 == {f"{s}-password" for s in SERVICES}  # and back: the service roles' turn
    assert keepers[1]["chat-password"] is None  # version 1 leaves a pre-existing stack's passwords alone
    for version, active in ((1, "gaia_{}"), (2, "gaia_{}_alt"), (3, "gaia_{}")):
        ev = evs[version]
        for service in SERVICES:
            assert _user(ev.outputs["serviceUrls"][service]) == active.format(service)
            assert {_user(u) for u in ev.outputs["serviceReaderUrls"][service]} == {active.format(service)}
        for version_resource in ev.of_type(AWS_VERSION):
            value = json.loads(version_resource.inputs["secretString"])
            assert _user(value["DATABASE_URL"]).startswith("gaia_")
            service = version_resource.name.split("-publish-")[1].removesuffix("-aws-value")
            assert _user(value["DATABASE_URL"]) == active.format(service)
    # The release is given both logins' passwords; it sets only the one whose digest moved (dynamic provider).
    passwords = {v: evs[v].one(RELEASE).inputs["rolePasswords"] for v in evs}
    assert set(passwords[1]) == {*SERVICES, "reader", *(f"{s}_alt" for s in SERVICES)}
    assert "rolePasswords" in evs[1].one(RELEASE).secret_inputs


def test_the_release_sets_only_the_passwords_whose_digest_moved() -> None:
    before = {"chat": "a", "chat_alt": "b", "reader": "c"}
    after = {"chat": "a", "chat_alt": "new", "reader": "c"}
    olds = {"passwordDigests": password_digests(before)}
    assert unchanged_passwords(olds, after) == ["chat", "reader"]
    assert unchanged_passwords({}, after) == []  # a state from before the digests: everything is set
    assert len(set(password_digests(before).values())) == 3 and "\"b\"" not in json.dumps(password_digests(before))


@pytest.mark.parametrize(
    ("publish", "message"),
    [
        ({"azure": {}}, "azure is not a field of it"),
        ({"aws": {"prefix": "/gaia"}}, "gaia-db:publish.aws.prefix is \"/gaia\""),
        ({"aws": {"kmsKeyId": "alias/x"}}, "gaia-db:publish.aws.kmsKeyId"),
        ({"aws": {"accessors": {"billing": ROLE}}}, "billing is not a service"),
        ({"aws": {"accessors": {"chat": "arn:aws:iam::1:user/x"}}}, "IAM role ARNs"),
        ({"gcp": {"accessors": {"chat": "chat@x"}}}, "IAM members such as serviceAccount:"),
        ({"fly": {"apps": {}}}, "gaia-db:publish.fly.apps"),
        ({"fly": {"apps": {"chat": "Gaia_Chat"}}}, "Fly app names"),
        ({"fly": {"apps": {"chat": "one-app", "auth": "one-app"}}}, "each service needs an app of its own"),
        ({"github": {"repository": "gaia"}}, "it lacks environment"),
        ({"github": {"repository": "no-slash", "environment": "staging"}}, "OWNER/NAME"),
    ],
)
def test_invalid_publish_settings_are_one_sentence(publish: dict[str, Any], message: str) -> None:
    error = run_error("staging", config("aws", publish=publish))
    assert message in error and error.startswith("gaia-db:publish")


def test_publishing_to_fly_needs_a_token_and_gcp_a_project() -> None:
    cfg = provider_config("staging", "aws", publish=TARGETS["fly"])
    assert "gaia-db:publish.fly is set, but gaia-db:flyApiToken is not" in run_error("staging", cfg)
    cfg = provider_config("staging", "aws", publish=TARGETS["gcp"])
    assert "gaia-db:publish.gcp is set, but gcp:project is not" in run_error("staging", cfg)


@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_credentials_version_is_a_positive_integer(value: Any) -> None:
    assert "gaia-db:credentialsVersion is" in run_error("staging", config("aws", credentialsVersion=value))
