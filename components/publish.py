"""Secret-store delivery (`gaia-db:publish`): each service's URL goes where the service reads it, on every `pulumi up`.

For each service, its URL (`serviceUrls`, the login `credentialsVersion` made active) and its own reader URLs
(`serviceReaderUrls`: the service's login on the replicas, never the shared gaia_reader) are published as

- AWS Secrets Manager: one secret per service, named `<prefix>/<service>/DATABASE_URL-<suffix>` (a name prefix: a
  deleted secret's name stays reserved for its recovery window, so a destroyed and re-created stack or a replaced
  secret never collides), holding `{"DATABASE_URL": …, "DATABASE_READER_URLS": …}` (ECS reads a key with
  `<arn>:DATABASE_URL::`); a resource policy lets the service's runtime role read it where `accessors` names one;
  deleted with a recovery window (7 days, prod 30), never `force_overwrite`/`force_delete`.
- GCP Secret Manager: `<prefix>-<service>-database-url` (and `-database-reader-urls` with replicas), one version
  holding the value, `roles/secretmanager.secretAccessor` for the service's named member only.
- Fly.io: the app's `DATABASE_URL` (and `DATABASE_READER_URLS`) through `fly secrets import` on stdin.
- GitHub: `<SERVICE>_DATABASE_URL` (and `_DATABASE_READER_URLS`) in a repository environment through `gh secret set`
  on stdin, with a token from the deployer's environment (GAIA_DB_GITHUB_TOKEN).

Every value is a secret Output from end to end: in state it is encrypted; the command resources get it in their
`environment` (never in the script text or an argument) and hand it to the CLI on stdin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi

from components.publish_settings import PublishSettings
from components.scripts import INTERPRETER, load
from components.settings import Settings
from dbops.names import SERVICES

URL_NAME = "DATABASE_URL"
READERS_NAME = "DATABASE_READER_URLS"
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"  # noqa: S105  # a role name


def _secret(value: pulumi.Output[str]) -> pulumi.Output[str]:
    hidden: pulumi.Output[str] = pulumi.Output.secret(value)
    return hidden


def _url_of(urls: pulumi.Output[dict[str, str]], service: str) -> pulumi.Output[str]:
    def pick(value: dict[str, str]) -> str:
        return value[service]

    return _secret(urls.apply(pick))


def _readers_of(urls: pulumi.Output[dict[str, list[str]]], service: str) -> pulumi.Output[list[str]]:
    def pick(value: dict[str, list[str]]) -> list[str]:
        return list(value[service])

    hidden: pulumi.Output[list[str]] = pulumi.Output.secret(urls.apply(pick))
    return hidden


def _joined(urls: pulumi.Output[list[str]]) -> pulumi.Output[str]:
    def join(value: list[str]) -> str:
        return ",".join(value)

    return _secret(urls.apply(join))


def recovery_window_days(settings: Settings) -> int:
    """How long a deleted Secrets Manager secret can be restored (7..30): the longest in prod."""
    return 30 if settings.is_prod else 7


def env_lines(url: str, readers: list[str], prefix: str = "") -> str:
    """NAME=VALUE lines (readers comma-separated, only with replicas): what the command resources import."""
    lines = [f"{prefix}{URL_NAME}={url}"]
    if readers:
        lines.append(f"{prefix}{READERS_NAME}={','.join(readers)}")
    return "\n".join(lines) + "\n"


def aws_value(url: str, readers: list[str]) -> str:
    value: dict[str, str] = {URL_NAME: url}
    if readers:
        value[READERS_NAME] = ",".join(readers)
    return json.dumps(value, sort_keys=True)


def aws_read_policy(secret_arn: str, role_arn: str) -> str:
    """The resource policy that lets the service's runtime role read its secret (and nothing else of it)."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ServiceRuntimeReads",
            "Effect": "Allow",
            "Principal": {"AWS": role_arn},
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            "Resource": secret_arn,
        }],
    })


class Publish(pulumi.ComponentResource):
    """Declares, per publish target, what carries each service's URL; see the module docstring."""

    TYPE = "gaia:index:Publish"

    def __init__(
        self,
        name: str,
        settings: Settings,
        service_urls: pulumi.Output[dict[str, str]],
        service_reader_urls: pulumi.Output[dict[str, list[str]]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(self.TYPE, name, None, opts)
        publish = settings.publish
        assert publish is not None
        self.settings = settings
        self.urls = {service: _url_of(service_urls, service) for service in SERVICES}
        self.readers = {service: _readers_of(service_reader_urls, service) for service in SERVICES}
        # Where each service's value went (names and ARNs only, never a value).
        self.locations: dict[str, pulumi.Output[Mapping[str, str]]] = {}
        if publish.aws is not None:
            self._aws(name, publish)
        if publish.gcp is not None:
            self._gcp(name, publish)
        if publish.fly is not None:
            self._fly(name, publish)
        if publish.github is not None:
            self._github(name, publish)
        self.register_outputs({target: output for target, output in self.locations.items()})

    def _child(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on)

    def _aws(self, name: str, publish: PublishSettings) -> None:
        import pulumi_aws as aws

        target = publish.aws
        assert target is not None
        arns: dict[str, pulumi.Output[str]] = {}
        for service in SERVICES:
            secret = aws.secretsmanager.Secret(
                f"{name}-{service}-aws",
                name_prefix=f"{target.prefix}/{service}/{URL_NAME}-",
                description=f"gaia-db {self.settings.environment}: the {service} service's {URL_NAME} "
                f"(and its reader URLs), written by pulumi up",
                kms_key_id=target.kms_key_id,
                recovery_window_in_days=recovery_window_days(self.settings),
                tags=self.settings.resource_tags,
                opts=self._child(),
            )
            value = pulumi.Output.all(self.urls[service], self.readers[service]).apply(
                lambda a: aws_value(a[0], a[1])
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-{service}-aws-value",
                secret_id=secret.id,
                secret_string=_secret(value),
                opts=self._child(),
            )
            role = target.accessors.get(service)
            if role is not None:
                aws.secretsmanager.SecretPolicy(
                    f"{name}-{service}-aws-policy",
                    secret_arn=secret.arn,
                    policy=secret.arn.apply(lambda arn, r=role: aws_read_policy(arn, r)),
                    block_public_policy=True,
                    opts=self._child(),
                )
            arns[service] = secret.arn
        self.locations["aws"] = pulumi.Output.all(**arns)

    def _gcp(self, name: str, publish: PublishSettings) -> None:
        import pulumi_gcp as gcp

        target = publish.gcp
        assert target is not None
        ids: dict[str, pulumi.Output[str]] = {}
        labels = self.settings.resource_tags
        values: list[tuple[str, str, pulumi.Output[str]]] = []
        for service in SERVICES:
            values.append((service, f"{target.prefix}-{service}-database-url", self.urls[service]))
            if self.settings.read_replicas:
                values.append((service, f"{target.prefix}-{service}-database-reader-urls",
                               _joined(self.readers[service])))
        for service, secret_id, value in values:
            resource = secret_id.removeprefix(f"{target.prefix}-")
            secret = gcp.secretmanager.Secret(
                f"{name}-{resource}-gcp",
                secret_id=secret_id,
                replication={"auto": {}},
                labels=labels,
                deletion_protection=False,  # destroying the stack removes what it published
                opts=self._child(),
            )
            gcp.secretmanager.SecretVersion(
                f"{name}-{resource}-gcp-value",
                secret=secret.id,
                secret_data=_secret(value),
                opts=self._child(),
            )
            member = target.accessors.get(service)
            if member is not None:
                gcp.secretmanager.SecretIamMember(
                    f"{name}-{resource}-gcp-accessor",
                    secret_id=secret.secret_id,
                    role=SECRET_ACCESSOR,
                    member=member,
                    opts=self._child(),
                )
            if secret_id.endswith("-database-url"):
                ids[service] = secret.id
        self.locations["gcp"] = pulumi.Output.all(**ids)

    def _fly(self, name: str, publish: PublishSettings) -> None:
        from pulumi_command import local

        target = publish.fly
        assert target is not None and self.settings.fly_api_token is not None  # parse_settings requires the token
        token = _secret(self.settings.fly_api_token)
        for service, app in target.apps.items():
            values = pulumi.Output.all(self.urls[service], self.readers[service]).apply(
                lambda a: env_lines(a[0], a[1])
            )
            local.Command(
                f"{name}-{service}-fly",
                create=load("common.sh", "publish/lib.sh", "publish/fly.sh"),
                update=load("common.sh", "publish/lib.sh", "publish/fly.sh"),
                delete=load("common.sh", "publish/lib.sh", "publish/fly-delete.sh"),
                interpreter=INTERPRETER,
                environment={"FLY_API_TOKEN": token, "GAIA_PUBLISH_APP": app,
                             "GAIA_PUBLISH_VALUES": _secret(values)},
                # Another app is another target: the new one gets the values, then the old one loses them.
                triggers=[app],
                logging=local.Logging.STDERR,  # progress only; values never reach stderr
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
            )
        self.locations["fly"] = pulumi.Output.from_input(dict(target.apps))

    def _github(self, name: str, publish: PublishSettings) -> None:
        from pulumi_command import local

        target = publish.github
        assert target is not None
        values = pulumi.Output.all(
            *[pulumi.Output.all(self.urls[s], self.readers[s]) for s in SERVICES]
        ).apply(lambda pairs: "".join(
            env_lines(url, readers, prefix=f"{service.upper()}_")
            for service, (url, readers) in zip(SERVICES, pairs, strict=True)
        ))
        local.Command(
            f"{name}-github",
            create=load("common.sh", "publish/lib.sh", "publish/github.sh"),
            update=load("common.sh", "publish/lib.sh", "publish/github.sh"),
            delete=load("common.sh", "publish/lib.sh", "publish/github-delete.sh"),
            interpreter=INTERPRETER,
            environment={"GAIA_PUBLISH_REPOSITORY": target.repository,
                         "GAIA_PUBLISH_ENVIRONMENT": target.environment,
                         "GAIA_PUBLISH_VALUES": _secret(values)},
            triggers=[target.repository, target.environment],
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdout", "stderr"]),
        )
        self.locations["github"] = pulumi.Output.from_input(
            {"repository": target.repository, "environment": target.environment}
        )
