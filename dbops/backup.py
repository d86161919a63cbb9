"""Backups and restores: the providers' own snapshot / point-in-time commands, and pg_dump / pg_restore for any URL.

Cloud stacks (resource names from components/*.py):

- fly: `fly pg backup create -a gaia-db-<env>`;
  restore: `fly pg backup restore <target> -a gaia-db-<env> [--restore-target-time T]`
- aws: `aws rds create-db-snapshot --db-instance-identifier gaia-<env> --db-snapshot-identifier gaia-<env>-<UTC>`;
  restore: `aws rds restore-db-instance-to-point-in-time --source-db-instance-identifier gaia-<env> ...`
- gcp: `gcloud sql backups create --instance=gaia-<env> --description=...`;
  restore: `gcloud sql instances clone gaia-<env> <target> [--point-in-time=T]`

Restores always go into a NEW instance / app.

The command is printed, then run with this process's environment (the CLIs take their credentials from there:
FLY_API_TOKEN, AWS_PROFILE / AWS_*, gcloud's configuration); `dry_run` prints only. No argument ever holds a secret.

Any URL (local stacks, or a logical copy of a cloud database): `pg_dump --format=custom`, and `pg_restore` into a
database this command creates, so it can never write over an existing one. The password reaches pg_dump/pg_restore
as PGPASSWORD in their environment, never in argv; the URL they get has no password.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dbops import roles
from dbops.connect import connect
from dbops.errors import DbopsError
from dbops.names import ENVIRONMENTS, OWNER_ROLE, PROVIDERS, cloud_name
from dbops.urls import parse_url, with_database, without_password

Progress = Callable[[str], None]
CLOUD_PROVIDERS = ("fly", "aws", "gcp")
INSTALL = {
    "fly": "install flyctl (https://fly.io/docs/flyctl/install/)",
    "aws": "install the AWS CLI v2",
    "gcp": "install the Google Cloud CLI",
}
DUMP_MAGIC = b"PGDMP"
# A new instance / app name: lower-case letters, digits and single hyphens, starting with a letter (valid for RDS
# instance identifiers, Cloud SQL instance ids and Fly app names alike).
TARGET_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?!-)){0,61}[a-z0-9]$")
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Extensions that hold no data and only a superuser may create (monitoring): a restore by a non-superuser admin goes on
# without them, and says so. Every other extension the archive has is created by the admin (trusted extensions, or the
# clouds' allow-listed ones for rds_superuser / cloudsqlsuperuser) or the restore is refused.
OPTIONAL_EXTENSIONS = frozenset({"pg_stat_statements"})
_EXTENSION_ENTRY = re.compile(r"^\d+; \d+ \d+ EXTENSION - (\S+)")
_EXTENSION_COMMENT = re.compile(r"^\d+; \d+ \d+ COMMENT - EXTENSION (\S+)")


def utc_stamp(now: datetime | None = None) -> str:
    """`20260102-030405`: sortable, and valid in RDS snapshot identifiers."""
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


def _check_environment(environment: str) -> None:
    if environment not in ENVIRONMENTS:
        raise DbopsError(f"environment {environment!r} is not allowed; use one of {', '.join(ENVIRONMENTS)}")


def parse_utc_time(text: str) -> str:
    """An RFC 3339 UTC timestamp, normalised to `2026-01-02T03:04:05Z`; anything else is refused."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.utcoffset() is None or value.utcoffset().total_seconds() != 0:  # type: ignore[union-attr]
        raise DbopsError(f"time {text!r} is not an RFC 3339 UTC timestamp like 2026-01-02T03:04:05Z")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_command(provider: str, environment: str, now: datetime | None = None) -> list[str]:
    """The provider's on-demand backup of the environment's database, as argv."""
    _check_environment(environment)
    stamp = utc_stamp(now)
    if provider == "fly":
        # flyctl internal/command/postgres/backup.go: `backup create` (-a/--app, -n/--name, -i/--immediate-checkpoint)
        return ["fly", "pg", "backup", "create", "-a", cloud_name("fly", environment)]
    if provider == "aws":
        return ["aws", "rds", "create-db-snapshot", "--db-instance-identifier", cloud_name("aws", environment),
                "--db-snapshot-identifier", f"gaia-{environment}-{stamp}"]
    if provider == "gcp":
        iso = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ["gcloud", "sql", "backups", "create", f"--instance={cloud_name('gcp', environment)}",
                f"--description=gaia-db {environment} on-demand backup {iso}"]
    raise DbopsError(f"provider {provider!r} has no cloud backup; use one of {', '.join(CLOUD_PROVIDERS)}")


@dataclass(frozen=True)
class AwsPlacement:
    """Where an RDS instance lives, as RDS reports it: the program auto-names these groups (`<name>-subnets-1a2b3c`)."""

    subnet_group: str
    parameter_group: str
    security_group_ids: tuple[str, ...]


def describe_aws_instance(identifier: str) -> AwsPlacement:
    """The subnet group, parameter group and security groups of RDS instance `identifier` (read-only)."""
    argv = ["aws", "rds", "describe-db-instances", "--db-instance-identifier", identifier, "--output", "json"]
    if shutil.which("aws") is None:
        raise DbopsError(f"`aws` is not on PATH; {INSTALL['aws']} and log in: the restore reads {identifier}'s "
                         "subnet, parameter and security groups from RDS")
    completed = subprocess.run(argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["no message"])[-1]
        raise DbopsError(f"`{shlex.join(argv[:5])}` failed with exit status {completed.returncode}: {reason}")
    try:
        instance = json.loads(completed.stdout)["DBInstances"][0]
        return AwsPlacement(
            subnet_group=instance["DBSubnetGroup"]["DBSubnetGroupName"],
            parameter_group=instance["DBParameterGroups"][0]["DBParameterGroupName"],
            security_group_ids=tuple(group["VpcSecurityGroupId"] for group in instance["VpcSecurityGroups"]),
        )
    except (ValueError, KeyError, IndexError, TypeError):
        raise DbopsError(f"`{shlex.join(argv[:5])}` did not describe {identifier}'s groups as RDS does") from None


def restore_command(provider: str, environment: str, target: str, at: str | None = None,
                    describe_aws: Callable[[str], AwsPlacement] = describe_aws_instance) -> list[str]:
    """The provider's restore of the environment's database into the NEW instance / app `target`, as argv.

    `at` (RFC 3339 UTC) restores to that point in time; without it, to the latest recoverable state. On AWS the
    source instance's real groups are read first (`describe_aws`), as the program auto-names them.
    """
    _check_environment(environment)
    if not TARGET_NAME.fullmatch(target):
        raise DbopsError(
            f"target {target!r} is not a valid new instance name: use 2-63 lower-case letters, digits and single "
            "hyphens, starting with a letter"
        )
    source = cloud_name(provider, environment)
    if target == source or target.startswith(f"{source}-replica-"):
        raise DbopsError(f"target {target!r} names the existing database; restores go into a new instance")
    check_cloud_target(target)
    when = parse_utc_time(at) if at is not None else None
    if provider == "fly":
        # flyctl backup.go `restore <destination-app-name>`: --restore-target-time, --restore-target-name, ...
        argv = ["fly", "pg", "backup", "restore", target, "-a", source]
        return argv + (["--restore-target-time", when] if when else [])
    if provider == "aws":
        # The restored instance goes where the source lives: its subnet group, parameter group (TLS only,
        # pg_stat_statements) and security groups, as RDS reports them.
        placement = describe_aws(source)
        argv = ["aws", "rds", "restore-db-instance-to-point-in-time", "--source-db-instance-identifier", source,
                "--target-db-instance-identifier", target]
        argv += ["--restore-time", when] if when else ["--use-latest-restorable-time"]
        return [*argv, "--db-subnet-group-name", placement.subnet_group, "--db-parameter-group-name",
                placement.parameter_group, "--vpc-security-group-ids", *placement.security_group_ids,
                "--no-publicly-accessible"]
    if provider == "gcp":
        return ["gcloud", "sql", "instances", "clone", source, target, *([f"--point-in-time={when}"] if when else [])]
    raise DbopsError(f"provider {provider!r} has no cloud restore; use one of {', '.join(CLOUD_PROVIDERS)}")


def check_cloud_target(target: str) -> None:
    """Refuse a restore target that is, or could become, an environment's cluster (or replica) on any provider: a
    deploy of that environment would adopt the restored copy as its database."""
    for environment in ENVIRONMENTS:
        for provider in PROVIDERS:
            if provider == "local":
                continue
            cluster = cloud_name(provider, environment)
            if target == cluster or target.startswith(f"{cluster}-replica-"):
                raise DbopsError(
                    f"target {target!r} is the name the {environment} stack gives its {provider} database, so a deploy "
                    f"of {environment} would adopt the restored copy; choose another name, e.g. {cluster}-restore"
                )


def check_restore_target(dump_file: Path, new_database: str) -> None:
    """What a pg_restore restore checks before it does anything (the dry run too)."""
    if not DATABASE_NAME.fullmatch(new_database):
        raise DbopsError(f"database name {new_database!r} is not a lower-case identifier of at most 63 characters")
    if not dump_file.is_file():
        raise DbopsError(f"{dump_file} is not a file")
    with dump_file.open("rb") as f:
        if f.read(len(DUMP_MAGIC)) != DUMP_MAGIC:
            raise DbopsError(f"{dump_file} is not a pg_dump custom-format archive (made by `dbops backup`)")


def run_command(argv: list[str], provider: str, *, dry_run: bool, progress: Progress,
                echo: Callable[[str], None]) -> int:
    """Print the command (stdout), then run it with inherited stdio unless `dry_run`."""
    echo(shlex.join(argv))
    sys.stdout.flush()  # the command line comes before anything the tool prints
    if dry_run:
        return 0
    if shutil.which(argv[0]) is None:
        raise DbopsError(f"`{argv[0]}` is not on PATH; {INSTALL[provider]} and log in, or use --dry-run")
    progress(f"running {argv[0]} {' '.join(argv[1:3])} ...")
    completed = subprocess.run(argv, check=False)
    if completed.returncode != 0:
        raise DbopsError(
            f"`{shlex.join(argv[:4])}` failed with exit status {completed.returncode}; its message is above"
        )
    return 0


# --- pg_dump / pg_restore -----------------------------------------------------------------------------------------


def client_binary(name: str) -> str:
    """The newest PostgreSQL client `name` (pg_dump, pg_restore): /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise DbopsError(f"{name} is not installed; install the PostgreSQL client (e.g. apt-get install postgresql-client)")


def _tool_env(url: str) -> dict[str, str]:
    """This process's environment minus libpq's own variables, plus the password (never argv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    password = parse_url(url).password
    if password:
        env["PGPASSWORD"] = password
    env["PGCONNECT_TIMEOUT"] = "10"
    return env


def _tool_error(tool: str, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # pg_dump/pg_restore prefix lines with "pg_dump: error:"; the first error line is the cause.
    errors = [line for line in lines if "error:" in line] or lines or ["no message"]
    detail = errors[0].split("error:", 1)[-1].strip()
    return f"{tool} failed: {detail}"


def dump(url: str, output: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """`pg_dump --format=custom` of the URL's database into `output`, which must not exist (and is never replaced).

    pg_dump writes a partial file of its own (unique name, mode 0600) beside `output`; a hard link then gives it the
    final name only if that name is still free, so a file created meanwhile is never overwritten either.
    """
    say = progress or (lambda _m: None)
    target = parse_url(url)
    if output.exists():
        raise DbopsError(f"{output} already exists; backups never overwrite a file, choose another --output")
    if not output.parent.is_dir():
        raise DbopsError(f"the directory {output.parent} does not exist")
    argv_head = [client_binary("pg_dump"), "--format=custom", "--no-password"]
    fd, partial_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    os.close(fd)
    partial = Path(partial_name)
    try:
        say(f"dumping database {target.database} at {target.location} to {output}")
        started = time.monotonic()
        argv = [*argv_head, f"--file={partial}", f"--dbname={without_password(url)}"]
        completed = subprocess.run(argv, env=_tool_env(url), capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise DbopsError(_tool_error("pg_dump", completed.stderr))
        try:
            os.link(partial, output)
        except FileExistsError:
            raise DbopsError(
                f"{output} was created by something else during the dump; backups never overwrite a file, "
                "choose another --output"
            ) from None
        except OSError as exc:
            raise DbopsError(f"could not create {output}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return {"file": str(output), "bytes": output.stat().st_size, "database": target.database,
            "format": "custom", "seconds": round(time.monotonic() - started, 3)}


def _count_tables(url: str) -> int:
    with connect(parse_url(url), wait_seconds=10) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%'"
        ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def restore(url: str, dump_file: Path, new_database: str, *, no_owner: bool = False, no_acl: bool = False,
            progress: Progress | None = None) -> dict[str, Any]:
    """Create `new_database` on the server of `url` (an admin login with CREATEDB) and pg_restore into it.

    Refuses when the database already exists. Everything that can be checked is checked before CREATE DATABASE (the
    archive's table of contents included); after it, any failure or interruption drops the new database again, and
    the restore itself is one transaction.
    """
    say = progress or (lambda _m: None)
    server = parse_url(url)
    check_restore_target(dump_file, new_database)
    pg_restore = client_binary("pg_restore")
    contents = _archive_list(pg_restore, dump_file, url)  # also refuses an archive whose contents are unreadable
    gaia_owned = _owned_by_gaia(contents)
    with connect(server, wait_seconds=10) as conn:
        exists = conn.execute("SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)", (new_database,))
        if exists.fetchone() == (True,):
            raise DbopsError(
                f"database {new_database!r} already exists on {server.location}; restores only go into a new "
                "database, choose another name"
            )
        try:
            # From template0: whatever was added to template1 on this server must not come along (nor collide).
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(new_database)))
        except psycopg.errors.DuplicateDatabase:
            raise DbopsError(
                f"database {new_database!r} was just created by someone else; choose another name"
            ) from None
        except psycopg.Error as exc:
            raise DbopsError(
                f"could not create database {new_database!r}: {exc.diag.message_primary or type(exc).__name__}"
            ) from None
    try:
        say(f"created database {new_database} on {server.location}; restoring {dump_file}")
        started = time.monotonic()
        new_url = with_database(url, new_database)
        if gaia_owned and not no_owner:
            _prepare_gaia_roles(new_url, new_database)
        # The archive's extensions are created here, as the admin may; their entries are left out of pg_restore's
        # list (CREATE EXTENSION and its COMMENT need a superuser where the extension is not trusted).
        _create_extensions(new_url, new_database, contents, say)
        use_list = Path(tempfile.mkstemp(prefix=".gaia-restore-", suffix=".list")[1])
        use_list.write_text("".join(f"{line}\n" for line in contents
                                    if not (_EXTENSION_ENTRY.match(line) or _EXTENSION_COMMENT.match(line))))
        argv = [pg_restore, "--exit-on-error", "--single-transaction", "--no-password", f"--use-list={use_list}",
                f"--dbname={without_password(url, new_database)}"]
        argv += ["--no-owner"] if no_owner else []
        argv += ["--no-acl"] if no_acl else []
        try:
            completed = subprocess.run([*argv, str(dump_file)], env=_tool_env(url), capture_output=True, text=True,
                                       check=False)
        finally:
            use_list.unlink(missing_ok=True)
        if completed.returncode != 0:
            reason = _tool_error("pg_restore", completed.stderr)
            hint = ""
            if "end of file" in reason:
                hint = f" ({dump_file} is truncated or damaged; make a new backup)"
            elif "role" in reason and not (no_owner and no_acl):
                hint = " (if a role is missing on this server, retry with --no-owner --no-acl)"
            raise _RestoreFailed(reason, hint)
        tables = _count_tables(new_url)
    except DbopsError as exc:
        fate = (f"database {new_database} was removed" if _drop_quietly(url, new_database)
                else f"database {new_database} could not be removed: drop it by hand")
        raise DbopsError(f"{exc}; {fate}{getattr(exc, 'hint', '')}") from None
    except BaseException:
        _drop_quietly(url, new_database)  # interrupted (Ctrl-C) or a bug: still leave nothing behind
        raise
    return {"database": new_database, "server": server.location, "tables": tables,
            "seconds": round(time.monotonic() - started, 3)}


class _RestoreFailed(DbopsError):
    """pg_restore failed; `hint` goes after the note that the database was removed."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _prepare_gaia_roles(new_url: str, new_database: str) -> None:
    # A gaia-db archive: its objects belong to the NOLOGIN owner role, and ALTER ... OWNER TO needs that role to
    # exist with CREATE on schema public before the archive's own GRANTs (restored last) arrive. The release's
    # first step prepares exactly that (roles, schema privileges, CONNECT on the database), idempotently.
    try:
        with connect(parse_url(new_url), wait_seconds=10) as conn, conn.transaction():
            roles.ensure_roles(conn)
    except psycopg.Error as exc:
        raise DbopsError(f"preparing the gaia-db roles in {new_database} failed: "
                         f"{exc.diag.message_primary or type(exc).__name__}") from None


def _archive_list(pg_restore: str, dump_file: Path, url: str) -> list[str]:
    """The archive's table of contents (`pg_restore --list`), one entry a line."""
    listed = subprocess.run([pg_restore, "--list", str(dump_file)], env=_tool_env(url),
                            capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise DbopsError(_tool_error("pg_restore", listed.stderr) + f"; {dump_file} is truncated or damaged")
    return listed.stdout.splitlines()


def _owned_by_gaia(contents: list[str]) -> bool:
    """Whether the archive's table of contents names the gaia-db owner role as an owner."""
    return any(line.split()[-1:] == [OWNER_ROLE] for line in contents if not line.startswith(";"))


def _create_extensions(new_url: str, new_database: str, contents: list[str], say: Progress) -> None:
    names = [m.group(1) for line in contents if (m := _EXTENSION_ENTRY.match(line))]
    if not names:
        return
    with connect(parse_url(new_url), wait_seconds=10) as conn:
        for name in names:
            try:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
            except psycopg.Error as exc:
                reason = exc.diag.message_primary or type(exc).__name__
                if name in OPTIONAL_EXTENSIONS:
                    say(f"extension {name} left out of {new_database}: {reason}; it holds no data (a superuser can "
                        f"add it later with CREATE EXTENSION {name})")
                    continue
                raise DbopsError(
                    f"the archive needs extension {name}, which this login may not create in {new_database} "
                    f"({reason}); enable it on the server (allow-list it, or have a superuser create it in template1) "
                    "and restore again"
                ) from None


def _drop_quietly(url: str, database: str) -> bool:
    """Drop `database` (made by this run); whether it is gone. FORCE ends a session pg_restore may still have open."""
    try:
        with connect(parse_url(url), wait_seconds=10) as conn:
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(database), force))
    except (psycopg.Error, DbopsError):
        return False
    return True
