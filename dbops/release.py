"""The post-deploy release: schema to head, least-privilege roles, admin seed. Called by the CLI and by Pulumi."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from dbops import adopt, locking, migrate, roles, seed
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.names import (
    ENVIRONMENTS,
    PASSWORD_LOGIN_ROLES,
    PASSWORD_LOGINS,
    READER,
    RELEASE_WAIT_SECONDS,
    SECOND_LOGINS,
    SERVICES,
)
from dbops.urls import parse_url

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
    # Logins whose password this release set (generated for a new role or on rotation, or given), in PASSWORD_LOGINS
    # order (the services, `reader`, then the services' second logins `chat_alt`, ...). A login missing here kept its
    # password, and its URL is missing from service_urls / reader_url / second_login_urls (this release never saw it).
    passwords_changed: tuple[str, ...] = ()
    # The read-only gaia_reader's URL on this server, when this release set its password.
    reader_url: str | None = field(default=None, repr=False)
    # service -> the URL of its second login (gaia_chat_alt), when this release set that login's password.
    second_login_urls: dict[str, str] = field(default_factory=dict, repr=False)


def _check_secret(what: str, value: str) -> str:
    if not value or "\x00" in value:
        raise DbopsError(f"{what} must be a non-empty string without NUL characters")
    return value


def check_passwords(given: Mapping[str, object] | None) -> dict[str, str]:
    """The passwords given (validated), by login (the services, `reader`, the second logins `chat_alt`, ...); one given
    None or left out has none."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(PASSWORD_LOGINS))
    if unknown:
        raise DbopsError(
            f"role passwords name unknown logins {', '.join(unknown)}; allowed: {', '.join(PASSWORD_LOGINS)}"
        )
    resolved: dict[str, str] = {}
    for login in PASSWORD_LOGINS:
        value = given.get(login)
        if value is None:
            continue
        if isinstance(value, str):
            resolved[login] = _check_secret(f"the {login} role password", value)
        else:
            raise DbopsError(f"the {login} role password must be a string")
    return resolved


def resolve_passwords(
    given: Mapping[str, str], existing: frozenset[str], *, rotate: bool, unchanged: Collection[str] = ()
) -> dict[str, str]:
    """The passwords to set: the given ones, and a new one for each other login whose role cannot log in yet (or
    every other login with `rotate`). A login missing from the result keeps the password its role has.

    `unchanged` names given logins whose password the database already has (the Pulumi release records what it set):
    those are not set again unless their role cannot log in, so a rotation touches only the login it rotates."""
    return {
        login: given[login] if login in given else secrets.token_urlsafe(32)
        for login in PASSWORD_LOGINS
        if (login in given and not (login in unchanged and login in existing))
        or (login not in given and (rotate or login not in existing))
    }


def normalize_email(admin_email: str) -> str:
    """NFC, the domain in lower case (case variants are one admin); control and format characters are refused."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in admin_email):
        raise DbopsError(
            "admin email contains a control character (a newline, tab, NUL or an invisible format character); "
            "give a plain address, e.g. admin@dev.gaia.com"
        )
    local, sep, domain = unicodedata.normalize("NFC", admin_email.strip()).rpartition("@")
    return f"{local}{sep}{domain.lower()}"


def validate(environment: str, admin_email: str) -> str:
    """Check the inputs; returns the admin e-mail normalised (normalize_email)."""
    if environment not in ENVIRONMENTS:
        raise DbopsError(f"environment {environment!r} is not allowed; use one of {', '.join(ENVIRONMENTS)}")
    admin_email = normalize_email(admin_email)
    if not EMAIL.fullmatch(admin_email) or len(admin_email) > EMAIL_MAX:
        raise DbopsError(
            f"admin email {admin_email!r} is not an e-mail address of at most {EMAIL_MAX} characters, "
            "e.g. admin@dev.gaia.com"
        )
    return admin_email


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
    rotate_passwords: bool = False,
    unchanged_passwords: Collection[str] = (),
    revision: str = "head",
) -> ReleaseResult:
    """Bring the database at `database_url` (an admin login) to head, the role matrix and the admin seed.

    Safe to run again and concurrently (one release at a time per database). A missing role password (a service's or
    the reader's) is generated only for a role that cannot log in yet (new), or for every role with
    `rotate_passwords`; otherwise the role keeps its password; a given one named in `unchanged_passwords` (the
    database has it already) is not set again. A missing admin key is generated only when there is no
    active one. The URL is parsed here, once; everything inward takes the parsed value. `revision` stops the
    migrations at an older revision (`dbops copy` releases the target to its source's revision first).
    """
    say = progress or (lambda _message: None)
    target = parse_url(database_url)
    admin_email = validate(environment, admin_email)
    given = check_passwords(role_passwords)
    if admin_api_key is not None:
        _check_secret("the admin API key", admin_api_key)

    say(f"release of {environment}: database {target.database} at {target.location}")
    with connect(target, wait_seconds=wait_seconds, progress=say) as conn:
        with _step("setting session limits"):
            for statement in migrate.SESSION_SETTINGS:
                conn.execute(statement)  # constant SQL
        with locking.release_lock(conn, progress=say):
            # A database the seed's script made (its tables, no revision) is brought to 0001 in place, or
            # refused with nothing changed; any other database is left to the migrations.
            adopt.adopt(target, wait_seconds=wait_seconds, progress=say)
            with _step("preparing roles"), conn.transaction():
                passwords = resolve_passwords(
                    given, roles.existing_logins(conn), rotate=rotate_passwords, unchanged=unchanged_passwords
                )
                roles.ensure_roles(conn)
                for change in roles.reconcile_roles(conn):
                    say(f"role reconciled: {change}")
            applied = migrate.upgrade(target, target=revision, wait_seconds=wait_seconds, progress=say)
            # Passwords, grants and seed in one transaction: all or nothing.
            with _step("granting privileges and seeding the admin"), conn.transaction():
                roles.set_passwords(conn, passwords)
                roles.apply_grants(conn)
                generated_key = seed.seed_admin(conn, email=admin_email, api_key=admin_api_key)
            with _step("reading the schema revision"):
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    revision = str(row[0]) if row else ""
    kept = [login for login in PASSWORD_LOGINS if login not in passwords]
    if kept:
        say(f"passwords kept (not shown): {', '.join(kept)}; give them in GAIA_DB_ROLE_PASSWORDS to get their URLs")
    say(f"done: revision {revision}")
    urls = {
        login: target.with_credentials(user=PASSWORD_LOGIN_ROLES[login], password=password)
        for login, password in passwords.items()
    }
    return ReleaseResult(
        revision=revision,
        service_urls={service: urls[service] for service in SERVICES if service in urls},
        admin_api_key=generated_key,
        applied=tuple(applied),
        passwords_changed=tuple(passwords),
        reader_url=urls.get(READER),
        second_login_urls={
            service: urls[SECOND_LOGINS[service]] for service in SERVICES if SECOND_LOGINS[service] in urls
        },
    )
