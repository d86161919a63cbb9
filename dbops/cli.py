"""`python -m dbops <command>`: thin wrappers; expected failures print `error: <sentence>` and exit 1."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

from dbops.errors import DbopsError
from dbops.names import ENVIRONMENTS, PASSWORD_LOGINS, PROVIDERS, RELEASE_WAIT_SECONDS

EXIT_ERROR = 1  # the command could not do its job (bad input, unreachable database, failing tool)
EXIT_FAILED_CHECK = 2  # the command ran and found a problem: unhealthy (health), drift (diff-schema)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _env(name: str) -> str | None:
    """An environment variable, with empty meaning unset."""
    return os.environ.get(name) or None


def _role_passwords() -> dict[str, object] | None:
    raw = _env("GAIA_DB_ROLE_PASSWORDS")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None  # the decoder's message quotes the input, which holds secrets
    if not isinstance(value, dict):
        raise DbopsError(
            f"GAIA_DB_ROLE_PASSWORDS must be a JSON object mapping logins ({', '.join(PASSWORD_LOGINS)}) to passwords"
        )
    return value


def cmd_release(args: argparse.Namespace) -> int:
    from dbops.release import release  # the heavy imports (Alembic, SQLAlchemy) only for commands that need them

    url = _env("DATABASE_URL")
    if url is None:
        raise DbopsError("set DATABASE_URL to the admin URL of the database, e.g. postgresql://user:pw@host:5432/db")
    result = release(
        url,
        environment=args.environment,
        admin_email=args.admin_email,
        role_passwords=_role_passwords(),  # type: ignore[arg-type]  # validated by release()
        admin_api_key=_env("GAIA_DB_ADMIN_API_KEY"),
        wait_seconds=args.wait,
        progress=_progress,
        rotate_passwords=args.rotate_passwords,
    )
    output: dict[str, object] = {
        "revision": result.revision,
        "serviceUrls": result.service_urls,
        "passwordsChanged": list(result.passwords_changed),
    }
    if result.reader_url is not None:
        output["readerUrl"] = result.reader_url
    if result.second_login_urls:
        output["secondLoginUrls"] = result.second_login_urls
    if result.admin_api_key is not None:
        output["adminApiKey"] = result.admin_api_key
    print(json.dumps(output))
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    from dbops.copy import DEFAULT_JOBS, copy

    source = _env("SOURCE_DATABASE_URL")
    if source is None:
        raise DbopsError("set SOURCE_DATABASE_URL to the admin URL of the database to copy from (the old one)")
    target = _env("DATABASE_URL")
    if target is None:
        raise DbopsError("set DATABASE_URL to the admin URL of the database to copy into (the new one)")
    result = copy(
        source,
        target,
        environment=args.environment,
        admin_email=args.admin_email,
        role_passwords=_role_passwords(),  # type: ignore[arg-type]  # validated by release()
        admin_api_key=_env("GAIA_DB_ADMIN_API_KEY"),
        jobs=args.jobs or DEFAULT_JOBS,
        wait_seconds=args.wait,
        progress=_progress,
    )
    print(json.dumps(result.as_json()))
    return 0


def _database_url() -> str:
    url = _env("DATABASE_URL")
    if url is None:
        raise DbopsError("set DATABASE_URL to the URL of the database, e.g. postgresql://user:pw@host:5432/db")
    return url


def cmd_health(args: argparse.Namespace) -> int:
    from dbops.health import check
    from dbops.urls import parse_url

    url = _database_url()
    parse_url(url)  # a malformed URL is a usage error (exit 1), not an unhealthy server (exit 2)
    result = check(url, timeout=args.timeout, max_lag=args.max_lag, expect_replicas=args.expect_replicas)
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "healthy" else EXIT_FAILED_CHECK


def cmd_metrics(args: argparse.Namespace) -> int:
    from dbops.metrics import collect, render

    report = collect(_database_url(), slow_ms=args.slow_ms, provider=args.provider)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _need_environment(args: argparse.Namespace, command: str) -> str:
    if args.environment is None:
        raise DbopsError(f"{command} --provider {args.provider} needs --environment ({', '.join(ENVIRONMENTS)})")
    return str(args.environment)


def cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dbops import backup
    from dbops.urls import parse_url, without_password

    if args.provider in backup.CLOUD_PROVIDERS:
        if args.output is not None:
            raise DbopsError(f"--output is for pg_dump backups; {args.provider} keeps its backups itself")
        argv = backup.backup_command(args.provider, _need_environment(args, "backup"))
        return backup.run_command(argv, args.provider, dry_run=args.dry_run, progress=_progress, echo=print)
    url = _database_url()
    output = Path(args.output or f"{parse_url(url).database}-{backup.utc_stamp()}.dump")
    if args.dry_run:
        print(f"pg_dump --format=custom --file={output} --dbname={without_password(url)}")
        return 0
    print(json.dumps(backup.dump(url, output, progress=_progress)))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dbops import backup
    from dbops.urls import parse_url, without_password

    if args.provider in backup.CLOUD_PROVIDERS:
        if args.file is not None or args.database is not None:
            raise DbopsError(f"restore --provider {args.provider} restores the provider's backups into --target; "
                             "it takes no dump file or --database")
        if args.target is None:
            raise DbopsError(f"restore --provider {args.provider} needs --target, the name of the NEW instance")
        argv = backup.restore_command(args.provider, _need_environment(args, "restore"), args.target, args.time)
        return backup.run_command(argv, args.provider, dry_run=args.dry_run, progress=_progress, echo=print)
    if args.file is None or args.database is None:
        raise DbopsError("restore needs a dump file and --database NEW_NAME (or --provider fly|aws|gcp --target NAME)")
    if args.target is not None or args.time is not None:
        raise DbopsError("--target and --time are for cloud restores (--provider fly|aws|gcp)")
    url = _database_url()
    parse_url(url)  # a malformed URL first, as the real run reports it
    backup.check_restore_target(Path(args.file), args.database)  # the dry run refuses what the real run refuses
    if args.dry_run:
        print(f"CREATE DATABASE {args.database} TEMPLATE template0; pg_restore --exit-on-error --single-transaction "
              f"--dbname={without_password(url, args.database)} {args.file}")
        return 0
    result = backup.restore(url, Path(args.file), args.database, no_owner=args.no_owner, no_acl=args.no_acl,
                            progress=_progress)
    print(json.dumps(result))
    return 0


def _url_argument(value: str, which: str) -> str:
    """`env:NAME` (the URL is in that variable), or a URL without a password (libpq then uses ~/.pgpass)."""
    from dbops.urls import parse_url

    if value.startswith("env:"):
        name = value[4:]
        url = _env(name)
        if url is None:
            raise DbopsError(f"{which}: the environment variable {name} is not set")
        return url
    try:
        password = parse_url(value).password
    except DbopsError as exc:
        raise DbopsError(f"{which}: {exc}") from None
    if password:
        raise DbopsError(
            f"{which} holds a password, which would be visible to every user of this machine in the process list; "
            "put the URL in a variable and pass env:NAME instead (e.g. env:DEV_URL)"
        )
    return value


def cmd_diff_schema(args: argparse.Namespace) -> int:
    from dbops.schema_diff import compare, render, snapshot

    a = snapshot(_url_argument(args.a, "URL_A"))
    b = snapshot(_url_argument(args.b, "URL_B"))
    diffs = compare(a, b)
    if args.json:
        print(json.dumps({"a": {"database": a.label, "revision": a.revision},
                          "b": {"database": b.label, "revision": b.revision},
                          "drift": bool(diffs), "differences": [d.as_dict() for d in diffs]}, indent=2))
    else:
        print(render(a, b, diffs))
    return EXIT_FAILED_CHECK if diffs else 0


def cmd_import_plan(args: argparse.Namespace) -> int:
    from dbops.import_plan import import_plan

    plan = import_plan(args.provider, args.environment, identifier=args.identifier, replicas=args.replicas,
                       database_name=args.database_name, admin_user=args.admin_user, project=args.project)
    print(json.dumps(plan, indent=2))
    return 0


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan  # inf would overflow the timeouts; NaN fails every test


def _seconds(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _milliseconds(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds >= 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs from 1 to 32")
    return int(text)


def parser() -> argparse.ArgumentParser:
    # psycopg comes with these; Alembic and SQLAlchemy only with the commands that run migrations.
    from dbops.health import DEFAULT_MAX_LAG, DEFAULT_TIMEOUT
    from dbops.metrics import DEFAULT_SLOW_MS

    top = argparse.ArgumentParser(prog="python -m dbops", description="gaia-db database operations")
    commands = top.add_subparsers(dest="command", required=True, metavar="command")
    rel = commands.add_parser(
        "release",
        help="bring DATABASE_URL to the current schema, roles and admin seed; print JSON",
        description="Reads DATABASE_URL, GAIA_DB_ROLE_PASSWORDS (JSON) and GAIA_DB_ADMIN_API_KEY from the "
        "environment. A missing password is generated only for a role that does not exist yet (an existing role "
        "keeps its password unless --rotate-passwords); a missing key only when there is no active one. Prints "
        "{revision, serviceUrls (the services whose password it set), passwordsChanged[, readerUrl (when it set the "
        "read-only gaia_reader's password)][, secondLoginUrls (the services whose second login, gaia_<service>_alt, it "
        "set)][, adminApiKey]}.",
    )
    rel.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    rel.add_argument("--admin-email", required=True)
    rel.add_argument(
        "--wait",
        type=_seconds,
        default=RELEASE_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for the database to accept connections (default {RELEASE_WAIT_SECONDS:g})",
    )
    rel.add_argument(
        "--rotate-passwords",
        action="store_true",
        help="generate a new password for every existing service role not given one in GAIA_DB_ROLE_PASSWORDS "
        "(its old URL stops working)",
    )
    rel.set_defaults(handler=cmd_release)

    cp = commands.add_parser(
        "copy",
        help="move an environment: every row of SOURCE_DATABASE_URL into DATABASE_URL, verified, then released",
        description="Stop the services' writes first. The target (DATABASE_URL: new, or only released) is released "
        "to the source's revision, gets every row of SOURCE_DATABASE_URL (pg_dump / pg_restore with --jobs, data "
        "only: roles come from the release), is verified table by table (row counts and checksums, each side in one "
        "snapshot), then migrated to head and seeded. GAIA_DB_ROLE_PASSWORDS and GAIA_DB_ADMIN_API_KEY as for "
        "release. Prints {sourceRevision, revision, tables, rows, jobs, seconds, rowsPerSecond, serviceUrls, "
        "passwordsChanged[, readerUrl][, adminApiKey]}.",
    )
    cp.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    cp.add_argument("--admin-email", required=True)
    cp.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                    help="parallel pg_dump / pg_restore jobs (default: up to 4, the CPUs here)")
    cp.add_argument("--wait", type=_seconds, default=30.0, metavar="SECONDS",
                    help="how long to wait for either database to accept connections (default 30)")
    cp.set_defaults(handler=cmd_copy)

    health = commands.add_parser(
        "health",
        help="is DATABASE_URL's server responsive, and its replication healthy? JSON; exit 0 healthy, 2 unhealthy",
        description="Connects to DATABASE_URL (any login; pg_monitor shows replica details) and prints JSON: status, "
        "responsive, role (primary/replica), replication_lag in seconds (0 on a primary), replicas (primary), "
        "reasons. Exit 0 when healthy, 2 when not, 1 when the command itself is misused.",
    )
    health.add_argument("--timeout", type=_positive_seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"connect timeout, and again statement timeout (default {DEFAULT_TIMEOUT:g})")
    health.add_argument("--max-lag", type=_seconds, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                        help=f"replication lag above this is unhealthy (default {DEFAULT_MAX_LAG:g})")
    health.add_argument("--expect-replicas", type=_count, default=None, metavar="N",
                        help="on a primary: unhealthy unless at least N replicas are streaming")
    health.set_defaults(handler=cmd_health)

    metrics = commands.add_parser(
        "metrics",
        help="connections per database, table sizes, slow queries (pg_stat_statements) of DATABASE_URL",
        description="The seed's three monitoring queries as tables (or JSON with --json). Without "
        "pg_stat_statements the slow-query section says why and how to enable it.",
    )
    metrics.add_argument("--json", action="store_true", help="print JSON instead of tables")
    metrics.add_argument("--slow-ms", type=_milliseconds, default=DEFAULT_SLOW_MS, metavar="MS",
                         help=f"mean execution time that makes a query slow (default {DEFAULT_SLOW_MS:g})")
    metrics.add_argument("--provider", choices=PROVIDERS, help="show only this provider's way to enable "
                         "pg_stat_statements")
    metrics.set_defaults(handler=cmd_metrics)

    bak = commands.add_parser(
        "backup",
        help="on-demand backup: the provider's snapshot (fly/aws/gcp) or pg_dump -Fc of DATABASE_URL",
        description="--provider fly|aws|gcp --environment ENV prints the provider's backup command and runs it "
        "(credentials from the environment). Otherwise (local, or any URL) pg_dump --format=custom of DATABASE_URL "
        "into --output (default <database>-<UTC time>.dump; never overwritten), password via PGPASSWORD.",
    )
    bak.add_argument("--provider", choices=PROVIDERS, default="local")
    bak.add_argument("--environment", choices=ENVIRONMENTS)
    bak.add_argument("--output", metavar="FILE", help="pg_dump only: the archive to write")
    bak.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    bak.set_defaults(handler=cmd_backup)

    res = commands.add_parser(
        "restore",
        help="restore into a NEW database (pg_restore) or a NEW instance (fly/aws/gcp point in time)",
        description="FILE --database NEW: creates NEW on DATABASE_URL's server (refused if it exists) and "
        "pg_restores FILE into it in one transaction. --provider fly|aws|gcp --environment ENV --target NAME "
        "[--time 2026-01-02T03:04:05Z]: the provider's restore into a new instance/app NAME (latest state without "
        "--time).",
    )
    res.add_argument("file", nargs="?", metavar="FILE", help="a custom-format archive from `dbops backup`")
    res.add_argument("--database", metavar="NEW", help="the database to create and restore into")
    res.add_argument("--no-owner", action="store_true", help="do not restore ownership (roles missing here)")
    res.add_argument("--no-acl", action="store_true", help="do not restore privileges (roles missing here)")
    res.add_argument("--provider", choices=PROVIDERS, default="local")
    res.add_argument("--environment", choices=ENVIRONMENTS)
    res.add_argument("--target", metavar="NAME", help="cloud: the new instance / app to restore into")
    res.add_argument("--time", metavar="RFC3339", help="cloud: restore to this UTC time (e.g. 2026-01-02T03:04:05Z)")
    res.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    res.set_defaults(handler=cmd_restore)

    diff = commands.add_parser(
        "diff-schema",
        help="every schema difference between two databases and their Alembic revisions; exit 2 on drift",
        description="URL_A and URL_B are env:NAME (the URL is in that environment variable) or URLs without a "
        "password (libpq reads ~/.pgpass). Compares tables, columns, constraints, indexes, functions, triggers, "
        "extensions and the alembic revision. Exit 0 identical, 2 drift, 1 error.",
    )
    diff.add_argument("a", metavar="URL_A")
    diff.add_argument("b", metavar="URL_B")
    diff.add_argument("--json", action="store_true", help="print JSON instead of lines")
    diff.set_defaults(handler=cmd_diff_schema)

    plan = commands.add_parser(
        "import-plan",
        help="the resources file `pulumi import --file` takes to adopt an existing RDS / Cloud SQL instance",
        description="Prints JSON for `pulumi import --file FILE --generate-code=false`: the stack's components and "
        "the existing instance, its replicas (named <identifier>-replica-<n>) and, on gcp, its database and admin "
        "user, under the names the program declares. Pass the values the stack's config sets (aws.identifier / "
        "gcp.instanceName, databaseName, gcp.adminUser). Needs no cloud access (docs/RUNBOOK.md §8).",
    )
    plan.add_argument("--provider", required=True, choices=("aws", "gcp"))
    plan.add_argument("--environment", required=True, choices=ENVIRONMENTS)
    plan.add_argument("--identifier", metavar="NAME",
                      help="the instance's name on its cloud, as aws.identifier / gcp.instanceName (default gaia-ENV)")
    plan.add_argument("--replicas", type=_count, metavar="N",
                      help="how many of the stack's read replicas exist already (default: the tier's)")
    plan.add_argument("--project", metavar="ID", help="gcp: the instance's project (required for gcp)")
    plan.add_argument("--database-name", metavar="NAME", help="gcp: as databaseName (default llm_platform)")
    plan.add_argument("--admin-user", metavar="NAME", help="gcp: as gcp.adminUser (default gaia_ENV)")
    plan.set_defaults(handler=cmd_import_plan)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: 0 after --help; 2 for misuse, which is our 1 (2 means "found a problem")
        return EXIT_ERROR if exc.code == 2 else int(exc.code or 0)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except DbopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
