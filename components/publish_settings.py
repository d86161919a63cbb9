"""The `gaia-db:publish` config section: where each service's URL is delivered (components/publish.py declares it).

Pure like `parse_settings`, whose helpers it shares: every invalid value is one sentence naming the key, the value
and what is allowed, before any resource is declared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.settings import FLY_APP_NAME, KMS_KEY_ARN, SettingsError, _fail, _object, _string
from dbops.names import SERVICES

# Secrets Manager names: letters, digits and /_+=.@- (CreateSecret Name); the stack appends /<service>/DATABASE_URL-
# and a generated suffix, which the 512-character limit leaves ample room for.
AWS_PREFIX = re.compile(r"^[A-Za-z0-9_+=.@-]+(/[A-Za-z0-9_+=.@-]+)*$")
IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
# Secret Manager secret ids: [A-Za-z0-9_-]{1,255}; the stack appends -<service>-database-url (at most 24 more).
GCP_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
GCP_MEMBER = re.compile(r"^(serviceAccount|user|group|principal|principalSet):\S+$")
# GitHub: owner/name; an environment name (the API takes up to 255 characters; we keep to the plain ones).
GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
GITHUB_ENVIRONMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
PUBLISH_TARGETS = ("aws", "gcp", "fly", "github")


@dataclass(frozen=True)
class AwsPublish:
    prefix: str  # secrets are named <prefix>/<service>/DATABASE_URL-<suffix>
    kms_key_id: str | None = None  # None: Secrets Manager's aws/secretsmanager key
    accessors: Mapping[str, str] = field(default_factory=dict)  # service -> IAM role ARN its runtime runs as


@dataclass(frozen=True)
class GcpPublish:
    prefix: str  # secret ids <prefix>-<service>-database-url
    accessors: Mapping[str, str] = field(default_factory=dict)  # service -> IAM member granted secretAccessor


@dataclass(frozen=True)
class FlyPublish:
    apps: Mapping[str, str]  # service -> Fly app whose DATABASE_URL secret gets its URL


@dataclass(frozen=True)
class GithubPublish:
    repository: str  # owner/name
    environment: str  # the repository's deployment environment holding <SERVICE>_DATABASE_URL


@dataclass(frozen=True)
class PublishSettings:
    aws: AwsPublish | None = None
    gcp: GcpPublish | None = None
    fly: FlyPublish | None = None
    github: GithubPublish | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(target for target in PUBLISH_TARGETS if getattr(self, target) is not None)


def _by_service(
    key: str, value: Any, check: re.Pattern[str], allowed: str, *, required: bool = False
) -> dict[str, str]:
    """{service: value} with services from SERVICES only."""
    if not isinstance(value, dict) or (required and not value):
        raise _fail(key, value, f"it must be an object mapping services ({', '.join(SERVICES)}) to {allowed}")
    unknown = sorted(set(value) - set(SERVICES))
    if unknown:
        raise _fail(key, value, f"{', '.join(unknown)} is not a service (services: {', '.join(SERVICES)})")
    return {service: _string(f"{key}.{service}", value[service], check, f"it must be {allowed}")
            for service in SERVICES if service in value}


def parse_publish(value: Any, *, environment: str, gcp_project: str | None) -> PublishSettings:
    """`publish: {aws?, gcp?, fly?, github?}`; absent or empty publishes nothing."""
    obj = _object("publish", value, (), PUBLISH_TARGETS)
    aws = gcp = fly = github = None
    if "aws" in obj:
        section = _object("publish.aws", obj["aws"], (), ("prefix", "kmsKeyId", "accessors"))
        aws = AwsPublish(
            prefix=_string("publish.aws.prefix", section.get("prefix", f"gaia/{environment}"), AWS_PREFIX,
                           "it must be a Secrets Manager name prefix: letters, digits and /_+=.@- (no leading or "
                           "trailing /), such as gaia/prod"),
            kms_key_id=_string("publish.aws.kmsKeyId", section["kmsKeyId"], KMS_KEY_ARN,
                               "it must be a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
            if "kmsKeyId" in section else None,
            accessors=_by_service("publish.aws.accessors", section.get("accessors", {}), IAM_ROLE_ARN,
                                  "IAM role ARNs (arn:aws:iam::ACCOUNT:role/NAME)"),
        )
    if "gcp" in obj:
        section = _object("publish.gcp", obj["gcp"], (), ("prefix", "accessors"))
        if not gcp_project:
            raise SettingsError("gaia-db:publish.gcp is set, but gcp:project is not; set it with "
                                "`pulumi config set gcp:project PROJECT` (the project that holds the secrets).")
        gcp = GcpPublish(
            prefix=_string("publish.gcp.prefix", section.get("prefix", f"gaia-{environment}"), GCP_PREFIX,
                           "it must be letters, digits, _ and - (at most 200), such as gaia-prod"),
            accessors=_by_service("publish.gcp.accessors", section.get("accessors", {}), GCP_MEMBER,
                                  "IAM members such as serviceAccount:chat@PROJECT.iam.gserviceaccount.com"),
        )
    if "fly" in obj:
        section = _object("publish.fly", obj["fly"], ("apps",))
        fly = FlyPublish(apps=_by_service("publish.fly.apps", section["apps"], FLY_APP_NAME,
                                          "Fly app names (lower-case letters, digits and dashes)", required=True))
        if len(set(fly.apps.values())) != len(fly.apps):
            raise _fail("publish.fly.apps", section["apps"], "each service needs an app of its own (each app gets one "
                        "DATABASE_URL)")
    if "github" in obj:
        section = _object("publish.github", obj["github"], ("repository", "environment"))
        github = GithubPublish(
            repository=_string("publish.github.repository", section["repository"], GITHUB_REPOSITORY,
                               "it must be OWNER/NAME, such as gaia-platform/chat"),
            environment=_string("publish.github.environment", section["environment"], GITHUB_ENVIRONMENT,
                                "it must be a GitHub environment name: letters, digits, '.', '_' and '-'"),
        )
    return PublishSettings(aws=aws, gcp=gcp, fly=fly, github=github)
