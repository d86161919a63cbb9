"""The post-deploy release as a Pulumi dynamic resource: migrations, roles and the admin seed after every change.

The logic is `dbops.release`; this module only decides *when* it runs. `diff` decides from inputs alone, so a no-op
`pulumi up` and every `pulumi preview` (a pull request's too, where the database is out of reach) open no database
connection.

Pulumi pickles the provider *by reference*: the state records the module path `components.release` and the class
name `ReleaseProvider`, and the provider process (`python -m pulumi.dynamic`, started in the project directory)
imports them again. Both names are therefore part of every stack's state: never move or rename them. Importing
this module has no side effects; connections are opened inside the methods only.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ResourceProvider, UpdateResult
from pulumi.output import Unknown
from pulumi.runtime import rpc

from dbops.names import RELEASE_WAIT_SECONDS

# Inputs whose change means the database must be released again. The connection URL is left out on purpose:
# a tunnel (fly proxy, SSM, Auth Proxy) may listen on a new local port every run, and that changes nothing.
DIFF_KEYS = ("migrationHead", "environment", "adminEmail", "endpoint", "credentialsFingerprint")
REQUIRED_INPUTS = ("connectionUrl", "endpoint", "environment", "adminEmail", "rolePasswords", "adminApiKey",
                   "migrationHead")


# A stack whose provider changes would create a new, empty database and delete the old one (protected outside dev,
# so that `up` stops at the delete, after the new one exists). The check stops it first, at `pulumi preview`.
PROVIDER_SWITCH = (
    "this stack's database is on {old}, and switching the stack to {new} would create an empty database and delete "
    "the {old} one with its data, so nothing was changed; keep provider {old} here, create a new stack on {new}, move "
    "the data with `python -m dbops copy` and retire this stack (docs/RUNBOOK.md §10, \"Moving an environment to "
    "another provider\")"
)


def provider_switch(olds: Mapping[str, Any], news: Mapping[str, Any]) -> str | None:
    """The refusal when the stack's provider differs from the one its database was released on, else None."""
    old, new = olds.get("provider"), news.get("provider")
    if isinstance(old, str) and isinstance(new, str) and old and new and old != new:
        return PROVIDER_SWITCH.format(old=old, new=new)
    return None


class ReleaseFailed(Exception):
    """The release could not finish; the message is one sentence for the person running `pulumi up`."""


def credentials_fingerprint(role_passwords: Mapping[str, str], admin_api_key: str) -> str:
    """A digest of every credential the release applies, so a rotation is seen without keeping them in outputs."""
    digest = hashlib.sha256()
    for service in sorted(role_passwords):
        digest.update(f"{service}\0{role_passwords[service]}\0".encode())
    digest.update(admin_api_key.encode())
    return digest.hexdigest()


def password_digests(role_passwords: Mapping[str, str]) -> dict[str, str]:
    """Per login, a digest of the password the release set, kept (secret) in the resource's outputs: the next update
    sets only the passwords whose digest moved, so a credentialsVersion bump touches the inactive login alone."""
    return {login: hashlib.sha256(f"{login}\0{password}".encode()).hexdigest() for login, password in
            sorted(role_passwords.items())}


def unchanged_passwords(olds: Mapping[str, Any], role_passwords: Mapping[str, str]) -> list[str]:
    """The logins whose password the last release already set (by the digests it recorded); none for a state from
    before the digests were recorded."""
    recorded = olds.get("passwordDigests")
    if not isinstance(recorded, Mapping):
        return []
    return [login for login, digest in password_digests(role_passwords).items() if recorded.get(login) == digest]


def _is_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_is_unknown(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_is_unknown(item) for item in value)
    # The provider process deserialises with keep_unknowns, which turns the engine's sentinel into an Unknown object
    # (pulumi/runtime/rpc.py deserialize_property); a direct caller may still pass the sentinel itself.
    return isinstance(value, Unknown) or bool(value == rpc.UNKNOWN)


def _state(props: Mapping[str, Any]) -> dict[str, Any]:
    """What the diff compares, as kept in the resource's outputs (no credential in plain form)."""
    return {
        "migrationHead": props["migrationHead"],
        "environment": props["environment"],
        "adminEmail": props["adminEmail"],
        "endpoint": props["endpoint"],
        "credentialsFingerprint": credentials_fingerprint(props["rolePasswords"], props["adminApiKey"]),
        "passwordDigests": password_digests(props["rolePasswords"]),
    }


class ReleaseProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(key, f"{key} is required") for key in REQUIRED_INPUTS if news.get(key) in (None, "")]
        switch = provider_switch(olds, news)
        if switch is not None:
            failures.append(CheckFailure("provider", switch))
        return CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Unknown inputs (a preview before the cluster or a new password exists) can only mean a change is coming.
        if any(_is_unknown(news.get(key)) for key in REQUIRED_INPUTS):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        new_state = _state(news)
        changed = [key for key in DIFF_KEYS if olds.get(key) != new_state[key]]
        return DiffResult(changes=bool(changed), replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"gaia-db-release-{props['environment']}", self._release(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # The SDK's default update would drop every output; the release returns them all again. Passwords the last
        # release set already are not set again (a rotation changes one login per service).
        return UpdateResult(self._release(news, unchanged_passwords(olds, news["rolePasswords"])))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Removing the release from the stack leaves the schema, roles and data exactly as they are."""

    def _release(self, props: Mapping[str, Any], unchanged: list[str] | None = None) -> dict[str, Any]:
        from dbops.errors import DbopsError
        from dbops.release import release
        from dbops.tls import root_certificate

        def progress(message: str) -> None:
            print(f"gaia-db release: {message}", file=sys.stderr, flush=True)

        try:
            # The URL verifies the server; the CA the cluster exported is what it verifies against (docs/tls.md).
            with root_certificate(props["connectionUrl"], props.get("caCertificate")) as connection_url:
                result = release(
                    connection_url,
                    environment=props["environment"],
                    admin_email=props["adminEmail"],
                    role_passwords=props["rolePasswords"],
                    admin_api_key=props["adminApiKey"],
                    wait_seconds=float(props.get("waitSeconds") or RELEASE_WAIT_SECONDS),
                    progress=progress,
                    unchanged_passwords=unchanged or [],
                )
        except DbopsError as error:
            # The SDK reports a provider exception with traceback.format_exc(), which honours sys.tracebacklimit:
            # at 0 the user reads this one sentence instead of the provider's stack.
            sys.tracebacklimit = 0
            raise ReleaseFailed(f"the gaia-db release of {props['environment']} failed: {error}") from None
        if result.revision != props["migrationHead"]:
            sys.tracebacklimit = 0
            raise ReleaseFailed(
                f"the gaia-db release of {props['environment']} left the database at revision {result.revision}, "
                f"but this program's migrations/ ends at {props['migrationHead']}"
            )
        return {"revision": result.revision, **_state(props)}


class Release(pulumi.dynamic.Resource, module="gaia", name="Release"):
    """Runs the release after the database exists and whenever its inputs change; see ReleaseProvider."""

    revision: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        connection_url: pulumi.Input[str],
        endpoint: pulumi.Input[str],
        environment: str,
        admin_email: str,
        provider: str,
        role_passwords: pulumi.Input[Mapping[str, pulumi.Input[str]]],
        admin_api_key: pulumi.Input[str],
        migration_head: str,
        ca_certificate: pulumi.Input[str] = "",
        wait_seconds: float = RELEASE_WAIT_SECONDS,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "connectionUrl": pulumi.Output.secret(connection_url),
            "endpoint": endpoint,
            "environment": environment,
            "adminEmail": admin_email,
            "provider": provider,  # checked against the released one: a provider switch is refused (check)
            "rolePasswords": pulumi.Output.secret(role_passwords),
            "adminApiKey": pulumi.Output.secret(admin_api_key),
            "migrationHead": migration_head,
            # The PEM the connection verifies the server against when its URL names no sslrootcert (public; not a
            # diff key: a new CA changes nothing in the database).
            "caCertificate": ca_certificate,
            "waitSeconds": wait_seconds,
            "revision": None,
            "credentialsFingerprint": None,
            "passwordDigests": None,
        }
        secret_outputs = pulumi.ResourceOptions(
            additional_secret_outputs=["credentialsFingerprint", "passwordDigests"]
        )
        super().__init__(ReleaseProvider(), name, props, pulumi.ResourceOptions.merge(opts, secret_outputs))
