"""Backups and restores: a real restore drill with pg_dump/pg_restore, and the cloud commands against recording
`fly` / `aws` / `gcloud` stand-ins (tests/e2e/fakes) that accept only the real CLIs' flags."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_runner import error_line, run_dbops
from opshelpers import FAKES
from pgserver import PgServer

from dbops import backup
from dbops.errors import DbopsError
from dbops.release import release
from dbops.urls import parse_url


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and an order-independent checksum of its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        result = {}
        for table in tables:
            row = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
            ).fetchone()
            assert row is not None
            result[str(table)] = (int(row[0]), str(row[1]))
    return result


def fill(url: str) -> None:
    release(url, environment="dev", admin_email="admin@dev.gaia.com")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE gaia_owner")
        conn.execute(
            "INSERT INTO users (email, name) SELECT 'u' || i || '@x.io', 'Zoë ' || i FROM generate_series(1, 300) i")
        conn.execute(
            "INSERT INTO chat_messages (user_id, conversation_id, role, content, tokens_used) "
            "SELECT id, gen_random_uuid(), 'user', repeat('hello ', 50), 7 FROM users")
        conn.execute(
            "INSERT INTO assets (user_id, type, name, metadata) "
            "SELECT id, 'image', 'f.png', jsonb_build_object('n', 1, 'ü', 'ß') FROM users LIMIT 50")


def database_exists(pg: PgServer, name: str) -> bool:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (1,)


@pytest.fixture
def made(pg: PgServer) -> Iterator[list[str]]:
    """Names of databases a test restores into on the session server; dropped afterwards, pass or fail."""
    names: list[str] = []
    yield names
    for name in names:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The argv and environment of every tool dbops.backup starts (the real tools still run)."""
    calls: list[dict[str, Any]] = []
    real = subprocess.run

    def spy(argv: list[str], **kwargs: Any) -> Any:
        calls.append({"argv": list(argv), "env": dict(kwargs.get("env") or {})})
        return real(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)  # the module backup.py imported
    return calls


def test_restore_drill(pg: PgServer, admin_url: str, tmp_path: Path, recorded: list[dict[str, Any]],
                       made: list[str]) -> None:
    made.append("drill_restored")
    fill(admin_url)
    before = fingerprint(admin_url)
    assert before["public.users"][0] == 301 and before["public.chat_messages"][0] == 301  # + the seeded admin
    archive = tmp_path / "drill.dump"
    made = backup.dump(admin_url, archive)
    assert made["bytes"] > 1000 and archive.read_bytes()[:5] == b"PGDMP"
    restored = backup.restore(admin_url, archive, "drill_restored")
    assert restored["database"] == "drill_restored" and restored["tables"] == len(before)
    restored_url = admin_url.rsplit("/", 1)[0] + "/drill_restored"
    assert fingerprint(restored_url) == before  # every table: same row count, same checksum
    # Ownership and grants came along: the chat service's role can read its table in the copy.
    with psycopg.connect(pg.url(dbname="drill_restored"), autocommit=True) as conn:
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'users'").fetchone()
        assert owner == ("gaia_owner",)
        conn.execute("SET ROLE gaia_chat")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM api_keys")
        conn.execute("RESET ROLE; SET ROLE gaia_chat")
        assert conn.execute("SELECT count(*) FROM chat_messages").fetchone() == (301,)
    assert [Path(c["argv"][0]).name for c in recorded] == ["pg_dump", "pg_restore", "pg_restore"]  # --list first
    password = parse_url(admin_url).password
    for call in recorded:
        assert not any(password in arg for arg in call["argv"])
        assert call["env"]["PGPASSWORD"] == password  # the password travels in the environment only


def test_restore_never_goes_over_an_existing_database(pg: PgServer, admin_url: str, tmp_path: Path) -> None:
    fill(admin_url)
    archive = tmp_path / "a.dump"
    backup.dump(admin_url, archive)
    existing = admin_url.rsplit("/", 1)[1]
    done = run_dbops("restore", str(archive), "--database", existing, env={"DATABASE_URL": admin_url})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"error: database '{existing}' already exists on 127.0.0.1:{pg.port}; restores only go "
                           "into a new database, choose another name\n")
    # The existing database is untouched, and the archive file is never overwritten either.
    assert fingerprint(admin_url)["public.users"][0] == 301
    again = run_dbops("backup", "--output", str(archive), env={"DATABASE_URL": admin_url})
    assert again.returncode == 1 and "already exists; backups never overwrite a file" in again.stderr


def test_cli_backup_and_restore_round_trip(admin_url: str, tmp_path: Path, made: list[str]) -> None:
    made.append("cli_copy")
    fill(admin_url)
    archive = tmp_path / "cli.dump"
    done = run_dbops("backup", "--output", str(archive), env={"DATABASE_URL": admin_url})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file"] == str(archive)
    assert archive.stat().st_mode & 0o077 == 0  # a copy of the data: readable by its owner only
    dry = run_dbops("restore", str(archive), "--database", "cli_copy", "--dry-run", env={"DATABASE_URL": admin_url})
    assert parse_url(admin_url).password not in dry.stdout and "--dbname=postgresql://admin_" in dry.stdout
    done = run_dbops("restore", str(archive), "--database", "cli_copy", env={"DATABASE_URL": admin_url})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["database"] == "cli_copy"
    assert fingerprint(admin_url.rsplit("/", 1)[0] + "/cli_copy") == fingerprint(admin_url)


def test_a_password_in_the_query_never_reaches_an_argv_or_the_output(admin_url: str, tmp_path: Path) -> None:
    user, host_db = admin_url.removeprefix("postgresql://").split("@", 1)
    url = f"postgresql://{user.split(':')[0]}@{host_db}?password=SECRET"
    for args in (["backup", "--dry-run"], ["backup", "--output", str(tmp_path / "q.dump")],
                 ["restore", str(tmp_path / "q.dump"), "--database", "q_copy", "--dry-run"]):
        done = run_dbops(*args, env={"DATABASE_URL": url})
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert error_line(done.stderr).startswith("error: the database URL has a password query parameter; ")
        assert "SECRET" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_dump_never_overwrites_nor_reuses_a_partial_file(admin_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fill(admin_url)
    output = tmp_path / "race.dump"
    stale = tmp_path / "race.dump.partial"  # what an interrupted run of the former code left behind
    stale.write_bytes(b"stale")
    real = subprocess.run

    def dump_then_intrude(argv: list[str], **kwargs: Any) -> Any:
        done = real(argv, **kwargs)
        output.write_bytes(b"someone else's file")  # created while pg_dump ran
        return done

    monkeypatch.setattr(subprocess, "run", dump_then_intrude)
    with pytest.raises(DbopsError, match="was created by something else during the dump; backups never overwrite"):
        backup.dump(admin_url, output)
    assert output.read_bytes() == b"someone else's file" and stale.read_bytes() == b"stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.dump", "race.dump.partial"]  # no partial of ours left
    monkeypatch.setattr(subprocess, "run", real)
    result = backup.dump(admin_url, tmp_path / "ok.dump")
    assert (tmp_path / "ok.dump").read_bytes()[:5] == b"PGDMP" and result["bytes"] > 1000
    assert stale.read_bytes() == b"stale"
    # A file already there is refused before pg_dump runs, and left as it was.
    with pytest.raises(DbopsError, match="already exists; backups never overwrite a file"):
        backup.dump(admin_url, output)
    assert output.read_bytes() == b"someone else's file"


@pytest.mark.parametrize("keep", ["header only", "half"])
def test_a_truncated_archive_is_refused_and_leaves_no_database(pg: PgServer, admin_url: str, tmp_path: Path,
                                                               made: list[str], keep: str) -> None:
    fill(admin_url)
    whole = tmp_path / "whole.dump"
    backup.dump(admin_url, whole)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(data[:100] if keep == "header only" else data[: len(data) // 2])
    made.append("from_truncated")
    done = run_dbops("restore", str(truncated), "--database", "from_truncated", env={"DATABASE_URL": admin_url})
    assert done.returncode == 1 and done.stdout == ""
    line = error_line(done.stderr)
    assert line.startswith("error: pg_restore failed: could not read from input file: end of file; ")
    assert f"{truncated} is truncated or damaged" in line
    if keep == "half":  # the table of contents is whole: the restore starts, fails, and removes its database
        assert "database from_truncated was removed" in line
    assert not database_exists(pg, "from_truncated")


def test_a_failed_restore_leaves_nothing_behind(pg: PgServer, admin_url: str, tmp_path: Path) -> None:
    not_a_dump = tmp_path / "x.dump"
    not_a_dump.write_bytes(b"hello")
    done = run_dbops("restore", str(not_a_dump), "--database", "nope", env={"DATABASE_URL": admin_url})
    assert done.returncode == 1 and "is not a pg_dump custom-format archive" in done.stderr
    # An archive with a table owned by a role the other server lacks: pg_restore fails, the new database is dropped.
    dbname = admin_url.rsplit("/", 1)[1]
    pg.execute("DROP ROLE IF EXISTS stranger; CREATE ROLE stranger NOLOGIN")
    pg.execute("CREATE TABLE odd (x int); ALTER TABLE odd OWNER TO stranger; INSERT INTO odd VALUES (1), (2)",
               dbname=dbname)
    archive = tmp_path / "roles.dump"
    backup.dump(pg.url(dbname=dbname), archive)
    other = PgServer().start()
    try:
        _, other_admin = other.create_database()
        done = run_dbops("restore", str(archive), "--database", "elsewhere", env={"DATABASE_URL": other_admin})
        assert done.returncode == 1 and done.stdout == ""
        progress, error = done.stderr.splitlines()  # one progress line, then the one-sentence error
        assert progress.startswith("created database elsewhere on 127.0.0.1:")
        assert error.startswith("error: pg_restore failed: ") and 'role "stranger" does not exist' in error
        assert error.endswith("database elsewhere was removed (if a role is missing on this server, retry with "
                              "--no-owner --no-acl)")
        with psycopg.connect(other.url(), autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'elsewhere'").fetchone() == (0,)
        done = run_dbops("restore", str(archive), "--database", "elsewhere", "--no-owner", "--no-acl",
                     env={"DATABASE_URL": other_admin})
        assert done.returncode == 0, done.stderr
        assert fingerprint(other.url(dbname="elsewhere")) == fingerprint(pg.url(dbname=dbname))
    finally:
        other.stop()


def test_a_gaia_archive_restores_onto_a_fresh_server(admin_url: str, tmp_path: Path) -> None:
    """Another server without the gaia roles: the restore prepares them (as the release would) and keeps ownership."""
    fill(admin_url)
    archive = tmp_path / "gaia.dump"
    backup.dump(admin_url, archive)
    other = PgServer().start()
    try:
        _, other_admin = other.create_database()
        done = run_dbops("restore", str(archive), "--database", "fresh", env={"DATABASE_URL": other_admin})
        assert done.returncode == 0, done.stderr
        fresh = other_admin.rsplit("/", 1)[0] + "/fresh"
        assert fingerprint(fresh) == fingerprint(admin_url)
        with psycopg.connect(fresh, autocommit=True) as conn:
            assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'api_keys'").fetchone() == (
                "gaia_owner",)
    finally:
        other.stop()


# --- cloud commands against the recording stand-ins -----------------------------------------------------------------

SECRETS = {"FLY_API_TOKEN": "fo1_secret-token-123", "AWS_SECRET_ACCESS_KEY": "aws-secret-456",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "CLOUDSDK_AUTH_ACCESS_TOKEN": "ya29.secret-789"}


def calls(state: Path) -> list[dict[str, Any]]:
    log = state / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def clouds(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with the fakes first; a Fly staging cluster with WAL backups and a dev one without."""
    state = tmp_path / "state"
    state.mkdir()
    env = {**SECRETS, "FAKE_FLY_STATE": str(state), "FAKE_CLI_STATE": str(state)}
    for name, size, memory, backups in (("staging", "shared-cpu-2x", "1024", ["--enable-backups"]),
                                        ("dev", "shared-cpu-1x", "256", [])):
        subprocess.run([str(FAKES / "fly"), "postgres", "create", "--name", f"gaia-db-{name}", "--org", "gaia",
                        "--region", "lax", "--vm-size", size, "--vm-memory", memory, "--volume-size", "10",
                        "--initial-cluster-size", "1", *backups], env={"PATH": "/usr/bin:/bin", **env},
                       check=True, capture_output=True)
    (state / "calls.jsonl").unlink()
    return env, state


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_dbops(*args, env=env, path=f"{FAKES}{os.pathsep}{os.environ['PATH']}")


def assert_no_secret_in_argv(state: Path) -> None:
    for call in calls(state):
        for value in SECRETS.values():
            assert not any(value in arg for arg in call["argv"]), call


def test_fly_backup_is_flyctls_exact_command(clouds: tuple[dict[str, str], Path]) -> None:
    env, state = clouds
    done = run(env, "backup", "--provider", "fly", "--environment", "staging")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "fly pg backup create -a gaia-db-staging"
    assert "Backup barman-" in done.stdout  # the fake's output passes through
    [call] = calls(state)
    assert call["argv"] == ["pg", "backup", "create", "-a", "gaia-db-staging"] and call["exit"] == 0
    assert call["token"] == SECRETS["FLY_API_TOKEN"]  # from the environment, as flyctl reads it
    # dev has no WAL backups (256 MB): flyctl refuses, and dbops says so in one sentence after flyctl's message.
    done = run(env, "backup", "--provider", "fly", "--environment", "dev")
    assert done.returncode == 1
    assert "Error: backups are not enabled. Run `fly pg backup enable -a gaia-db-dev`" in done.stderr
    assert done.stderr.endswith("error: `fly pg backup create` failed with exit status 1; its message is above\n")
    assert_no_secret_in_argv(state)


def test_aws_and_gcp_backups_are_their_clis_exact_commands(clouds: tuple[dict[str, str], Path]) -> None:
    env, state = clouds
    done = run(env, "backup", "--provider", "aws", "--environment", "prod")
    assert done.returncode == 0, done.stderr
    done = run(env, "backup", "--provider", "gcp", "--environment", "prod")
    assert done.returncode == 0, done.stderr
    aws, gcloud = calls(state)
    assert aws["tool"] == "aws" and aws["exit"] == 0
    assert aws["argv"][:5] == ["rds", "create-db-snapshot", "--db-instance-identifier", "gaia-prod",
                               "--db-snapshot-identifier"]
    assert re.fullmatch(r"gaia-prod-\d{8}-\d{6}", aws["argv"][5]) and len(aws["argv"]) == 6
    assert gcloud["tool"] == "gcloud" and gcloud["exit"] == 0
    assert gcloud["argv"][:4] == ["sql", "backups", "create", "--instance=gaia-prod"]
    assert re.fullmatch(r"--description=gaia-db prod on-demand backup \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ",
                        gcloud["argv"][4]) and len(gcloud["argv"]) == 5
    assert "AWS_SECRET_ACCESS_KEY" in aws["env"]  # credentials reach the CLI through its environment
    assert_no_secret_in_argv(state)


def test_dry_run_prints_and_runs_nothing(clouds: tuple[dict[str, str], Path]) -> None:
    env, state = clouds
    for provider, expected in (("fly", "fly pg backup create -a gaia-db-prod"),
                               ("aws", "aws rds create-db-snapshot --db-instance-identifier gaia-prod "
                                       "--db-snapshot-identifier gaia-prod-"),
                               ("gcp", "gcloud sql backups create --instance=gaia-prod '--description=gaia-db prod")):
        done = run(env, "backup", "--provider", provider, "--environment", "prod", "--dry-run")
        assert done.returncode == 0 and done.stdout.startswith(expected), done.stdout
    assert calls(state) == []


def test_cloud_restores_go_into_a_new_instance(clouds: tuple[dict[str, str], Path]) -> None:
    env, state = clouds
    at = "2026-01-02T03:04:05Z"
    for provider in ("fly", "aws", "gcp"):
        done = run(env, "restore", "--provider", provider, "--environment", "staging", "--target",
                   "gaia-staging-restore", "--time", at)
        assert done.returncode == 0, done.stderr
    done = run(env, "restore", "--provider", "aws", "--environment", "staging", "--target", "gaia-staging-latest")
    assert done.returncode == 0, done.stderr
    fly, describe, aws, gcloud, _, aws_latest = calls(state)
    assert fly["argv"] == ["pg", "backup", "restore", "gaia-staging-restore", "-a", "gaia-db-staging",
                           "--restore-target-time", at] and fly["exit"] == 0
    # The program auto-names the source's groups: the restore reads them from RDS first (read-only) and uses those.
    assert describe["argv"] == ["rds", "describe-db-instances", "--db-instance-identifier", "gaia-staging",
                                "--output", "json"] and describe["exit"] == 0
    assert aws["argv"] == ["rds", "restore-db-instance-to-point-in-time", "--source-db-instance-identifier",
                           "gaia-staging", "--target-db-instance-identifier", "gaia-staging-restore",
                           "--restore-time", at, "--db-subnet-group-name", "gaia-db-staging-subnets-3f9a1c2",
                           "--db-parameter-group-name", "gaia-db-staging-params-7b2e4d1",
                           "--vpc-security-group-ids", "sg-0s1a2b3c4d5e6f7a8", "--no-publicly-accessible"]
    assert aws["exit"] == 0
    assert gcloud["argv"] == ["sql", "instances", "clone", "gaia-staging", "gaia-staging-restore",
                              f"--point-in-time={at}"] and gcloud["exit"] == 0
    assert "--use-latest-restorable-time" in aws_latest["argv"] and aws_latest["exit"] == 0
    # Refused before any tool runs: restoring onto the source itself, and a time that is not UTC RFC 3339.
    done = run(env, "restore", "--provider", "gcp", "--environment", "prod", "--target", "gaia-prod")
    assert done.returncode == 1 and "names the existing database; restores go into a new instance" in done.stderr
    for provider in ("aws", "gcp"):  # nor onto one of its replicas, whoever calls restore_command
        with pytest.raises(DbopsError, match="names the existing database; restores go into a new instance"):
            backup.restore_command(provider, "prod", "gaia-prod-replica-1")
    done = run(env, "restore", "--provider", "fly", "--environment", "prod", "--target", "x-new", "--time", "yesterday")
    assert done.returncode == 1 and "is not an RFC 3339 UTC timestamp" in done.stderr
    assert len(calls(state)) == 6
    assert_no_secret_in_argv(state)


def test_an_aws_restore_whose_source_rds_does_not_know_is_one_sentence(clouds: tuple[dict[str, str], Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    env, state = clouds
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLI_STATE", env["FAKE_CLI_STATE"])
    with pytest.raises(DbopsError, match=r"^`aws rds describe-db-instances --db-instance-identifier gaia-nope` failed "
                                          r"with exit status 254: An error occurred \(DBInstanceNotFound\)"):
        backup.restore_command("aws", "dev", "gaia-dev-restore",
                               describe_aws=lambda _: backup.describe_aws_instance("gaia-nope"))
    (state / "calls.jsonl").unlink()
    done = run(env, "restore", "--provider", "aws", "--environment", "dev", "--target", "gaia-dev-restore",
               "--dry-run")
    # A dry run reads the groups too (read-only), prints the restore and runs nothing else.
    assert done.returncode == 0 and "--db-subnet-group-name gaia-db-dev-subnets-3f9a1c2" in done.stdout
    assert [call["argv"][1] for call in calls(state)] == ["describe-db-instances"]


def test_missing_cli_is_one_sentence(clouds: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, state = clouds
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    # Only an empty directory on PATH (python is sys.executable): no gcloud, whatever this machine has installed.
    done = run_dbops("backup", "--provider", "gcp", "--environment", "dev", env=env, path=str(empty))
    assert done.returncode == 1
    assert done.stdout.startswith("gcloud sql backups create --instance=gaia-dev")  # the command is still printed
    assert error_line(done.stderr) == (
        "error: `gcloud` is not on PATH; install the Google Cloud CLI and log in, or use --dry-run")
    assert calls(state) == []


def test_a_dump_with_the_providers_extensions_restores_as_the_non_superuser_admin(
    pg: PgServer, admin_url: str, tmp_path: Path, made: list[str]
) -> None:
    """Finding 1: the local stack (and Fly) install pg_stat_statements, which only a superuser may create; a trusted
    extension (pgcrypto) is created by the admin itself. The restore drill passes as the admin login."""
    made.append("ext_restored")
    dbname = admin_url.rsplit("/", 1)[1]
    pg.execute("CREATE EXTENSION pg_stat_statements", dbname=dbname)  # as local/create.sh does, as the superuser
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgcrypto")  # trusted: the admin may
    fill(admin_url)
    archive = tmp_path / "ext.dump"
    backup.dump(admin_url, archive)
    lines: list[str] = []
    restored = backup.restore(admin_url, archive, "ext_restored", progress=lines.append)
    assert restored["tables"] == len(fingerprint(admin_url))
    assert fingerprint(admin_url.rsplit("/", 1)[0] + "/ext_restored") == fingerprint(admin_url)
    with psycopg.connect(pg.url(dbname="ext_restored"), autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT extname FROM pg_extension ORDER BY 1")] == ["pgcrypto", "plpgsql"]
    assert any(line.startswith("extension pg_stat_statements left out of ext_restored: permission denied") for line in
               lines), lines
    # The same restore through the CLI, with and without --no-owner --no-acl.
    for extra, name in (([], "ext_cli"), (["--no-owner", "--no-acl"], "ext_cli_plain")):
        made.append(name)
        done = run_dbops("restore", str(archive), "--database", name, *extra, env={"DATABASE_URL": admin_url})
        assert done.returncode == 0, done.stderr


def test_the_restore_target_is_made_from_template0(pg: PgServer, admin_url: str, tmp_path: Path,
                                                   made: list[str]) -> None:
    """Finding 6: whatever someone added to template1 does not come along into a restored database."""
    made.append("t0_restored")
    fill(admin_url)
    archive = tmp_path / "t0.dump"
    backup.dump(admin_url, archive)
    pg.execute("CREATE TABLE template1_junk (id int)", dbname="template1")
    try:
        backup.restore(admin_url, archive, "t0_restored")
    finally:
        pg.execute("DROP TABLE template1_junk", dbname="template1")
    with psycopg.connect(pg.url(dbname="t0_restored"), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.template1_junk')").fetchone() == (None,)


def test_a_dry_run_refuses_what_the_real_run_refuses(admin_url: str, tmp_path: Path) -> None:
    """Finding 10, pg_restore side: the plan is printed only for a restore that would be attempted."""
    not_an_archive = tmp_path / "x.dump"
    not_an_archive.write_text("hello")
    cases = [
        (["--database", "Bad-Name"], "error: database name 'Bad-Name' is not a lower-case identifier"),
        (["--database", "fine"], f"error: {not_an_archive} is not a pg_dump custom-format archive"),
    ]
    for args, message in cases:
        done = run_dbops("restore", str(not_an_archive), *args, "--dry-run", env={"DATABASE_URL": admin_url})
        assert done.returncode == 1 and done.stdout == "" and error_line(done.stderr).startswith(message), done.stderr


@pytest.mark.parametrize("target", ["gaia-db-prod", "gaia-prod", "gaia-staging-replica-1", "gaia-db-dev"])
def test_a_cloud_restore_target_never_takes_another_environments_name(target: str) -> None:
    """Finding 10, cloud side: `--environment dev --target gaia-db-prod` would be adopted by prod's next deploy."""
    for provider in ("fly", "aws", "gcp"):
        done = run_dbops("restore", "--provider", provider, "--environment", "dev", "--target", target, "--dry-run")
        assert done.returncode == 1 and done.stdout == "", done.stdout
        assert re.search(r"^error: target '[a-z0-9-]+' (names the existing database|is the name the \w+ stack gives)",
                         error_line(done.stderr)), done.stderr
