"""The post-deploy release: schema to head, least-privilege roles, admin seed. Called by the CLI and by Pulumi."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from dbops import locking, migrate, roles, seed
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.names import ENVIRONMENTS, RELEASE_WAIT_SECONDS, SERVICE_ROLES, SERVICES
from dbops.urls import parse_url, with_credentials

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
EMAIL_MAX = 255  # users.email is VARCHAR(255)


@dataclass(frozen=True)
class ReleaseResult:
    """What a release leaves behind; secrets stay out of repr."""

    revision: str
    service_urls: dict[str, str] = field(repr=False)
    # The plaintext admin API key, only when this release generated it (otherwise the caller already has it).
    admin_api_key: str | None = field(repr=False)
    applied: tuple[str, ...] = ()  # revisions this release applied, oldest first


def _check_secret(what: str, value: str) -> str:
    if not value or "\x00" in value:
        raise DbopsError(f"{what} must be a non-empty string without NUL characters")
    return value


def resolve_passwords(given: Mapping[str, object] | None) -> dict[str, str]:
    """Every service's password: the ones given (validated), the missing ones generated."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(SERVICES))
    if unknown:
        raise DbopsError(f"role passwords name unknown services {', '.join(unknown)}; allowed: {', '.join(SERVICES)}")
    resolved: dict[str, str] = {}
    for service in SERVICES:
        value = given.get(service)
        if value is None:
            resolved[service] = secrets.token_urlsafe(32)
        elif isinstance(value, str):
            resolved[service] = _check_secret(f"the {service} role password", value)
        else:
            raise DbopsError(f"the {service} role password must be a string")
    return resolved


def validate(environment: str, admin_email: str) -> None:
    if environment not in ENVIRONMENTS:
        raise DbopsError(f"environment {environment!r} is not allowed; use one of {', '.join(ENVIRONMENTS)}")
    if not EMAIL.fullmatch(admin_email) or len(admin_email) > EMAIL_MAX:
        raise DbopsError(
            f"admin email {admin_email!r} is not an e-mail address of at most {EMAIL_MAX} characters, "
            "e.g. admin@dev.gaia.com"
        )


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Database errors in a release step become one sentence naming the step (never the statement)."""
    try:
        yield
    except psycopg.Error as exc:
        reason = exc.diag.message_primary or type(exc).__name__
        raise DbopsError(f"{what} failed: {reason}") from None


def release(
    database_url: str,
    *,
    environment: str,
    admin_email: str,
    role_passwords: Mapping[str, str] | None = None,
    admin_api_key: str | None = None,
    wait_seconds: float = RELEASE_WAIT_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> ReleaseResult:
    """Bring the database at `database_url` (an admin login) to head, the role matrix and the admin seed.

    Safe to run again and concurrently (one release at a time per database). Missing role passwords and a missing
    admin key are generated; an existing active admin key is kept when none is given.
    """
    say = progress or (lambda _message: None)
    target = parse_url(database_url)
    validate(environment, admin_email)
    passwords = resolve_passwords(role_passwords)
    if admin_api_key is not None:
        _check_secret("the admin API key", admin_api_key)

    say(f"release of {environment}: database {target.database} at {target.location}")
    with connect(database_url, wait_seconds=wait_seconds, progress=say) as conn:
        with _step("setting session limits"):
            for statement in migrate.SESSION_SETTINGS:
                conn.execute(statement)  # constant SQL
        with locking.release_lock(conn, progress=say):
            with _step("preparing roles"), conn.transaction():
                roles.ensure_roles(conn)
            applied = migrate.upgrade(database_url, wait_seconds=wait_seconds, progress=say)
            # Passwords, grants and seed in one transaction: all or nothing.
            with _step("granting privileges and seeding the admin"), conn.transaction():
                roles.set_passwords(conn, passwords)
                roles.apply_grants(conn)
                generated_key = seed.seed_admin(conn, email=admin_email, api_key=admin_api_key)
            with _step("reading the schema revision"):
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    revision = str(row[0]) if row else ""
    say(f"done: revision {revision}")
    return ReleaseResult(
        revision=revision,
        service_urls={
            service: with_credentials(database_url, user=SERVICE_ROLES[service], password=passwords[service])
            for service in SERVICES
        },
        admin_api_key=generated_key,
        applied=tuple(applied),
    )
