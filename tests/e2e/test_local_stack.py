"""The `local` stack end to end: the program runs under the mock engine, and the shell scripts its Command resources
declare run for real, the way pulumi-command would run them, against real PostgreSQL servers.

This is the whole-deploy test: everything `pulumi up --stack local` does, minus the engine.
- `tests/program.py` runs the real `__main__.py` with `Pulumi.local.yaml` under the mock engine and records every
  declared resource (inputs, which are secret, parent, dependencies, a component's outputs);
- `ScriptRunner` runs a declared Command's create/update/delete exactly as pulumi-command does (interpreter +
  script text, the declared environment on top of ours) and keeps every output for the secret scan;
- `LocalStack` applies declarations in dependency order, diffs a new declaration against the applied one like
  the engine (same inputs: nothing; a changed trigger: replace; else: update), deletes in reverse order, and its
  fixture's finalizer stops every postgres under the temp directory and removes it, whatever happened;
- the release runs in the real dynamic-provider process, driven over gRPC (tests/provider_process.py), and the
  stack's `serviceUrls` then log in over TLS with exactly the rights of DESIGN.md's matrix.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import psycopg
import pytest
from matrix import ALLOWED, insert_sample_rows, rights
from pgserver import as_server_user, free_port, server_tmpdir, wait_until
from program import ROOT, Declared, Evaluation, FakeCloud, evaluate, stack_config
from provider_process import ProviderProcess, serialized_release_provider
from pulumi.runtime.proto import provider_pb2

from components.local import ADMIN_USER, boot_id
from components.scripts import HERE as SCRIPTS_DIR
from dbops.health import check
from dbops.names import SERVICES
from dbops.revisions import head_revision
from dbops.seed import key_hash
from dbops.urls import parse_url

pytestmark = pytest.mark.xdist_group("local_stack")  # one worker runs this file's module-scoped servers

COMMAND = "command:local:Command"
SCRIPT_TIMEOUT = 120

def strings(value: Any) -> Iterator[str]:
    """Every string in a declared input (keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def commands_in_order(declared: list[Declared]) -> list[Declared]:
    """The Command resources, each after everything it depends on (the engine's create order)."""
    commands = {d.urn: d for d in declared if d.type == COMMAND}
    ordered: dict[str, Declared] = {}

    def visit(urn: str, path: tuple[str, ...] = ()) -> None:
        assert urn not in path, f"dependency cycle: {' -> '.join((*path, urn))}"
        if urn not in ordered:
            for dep in commands[urn].dependencies:
                if dep in commands:
                    visit(dep, (*path, urn))
            ordered[urn] = commands[urn]

    for urn in commands:
        visit(urn)
    return list(ordered.values())


# --- running the declared scripts ----------------------------------------------------------------------------


@dataclass
class ScriptRun:
    resource: str
    phase: str
    returncode: int
    stdout: str
    stderr: str


class ScriptRunner:
    """Runs a Command's create/update/delete as pulumi-command 1.x does (provider/pkg/provider/local): the
    interpreter + [script], the provider's environment plus the declared one, and the previous run's non-empty
    stdout/stderr as PULUMI_COMMAND_STDOUT/STDERR unless `addPreviousOutputInEnv` is false. Update runs the new
    inputs, delete the applied (old) ones."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.runs: list[ScriptRun] = []
        self.extra_env = extra_env or {}
        self._last: dict[str, ScriptRun] = {}

    def run(self, resource: Declared, phase: str, *, check: bool = True) -> ScriptRun:
        inputs = resource.inputs
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIA_", "PULUMI_COMMAND_"))}
        env.update(self.extra_env)
        env.update(inputs.get("environment", {}))
        previous = self._last.get(resource.name)
        if phase != "create" and previous and inputs.get("addPreviousOutputInEnv", True):
            for name, text in (("PULUMI_COMMAND_STDOUT", previous.stdout), ("PULUMI_COMMAND_STDERR", previous.stderr)):
                if text.rstrip("\n"):
                    env[name] = text.removesuffix("\n")
        proc = subprocess.run(
            [*inputs["interpreter"], inputs[phase]],
            cwd=inputs.get("dir") or ROOT, env=env,  # the project directory, where Pulumi runs the provider
            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False,
        )
        run = ScriptRun(resource.name, phase, proc.returncode, proc.stdout, proc.stderr)
        self.runs.append(run)
        if phase != "delete":
            self._last[resource.name] = run
        if check and proc.returncode != 0:
            raise AssertionError(f"{resource.name} {phase} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
        return run


# --- the stack: a LocalCluster on a free port under a temp directory ------------------------------------------


def postgres_pids(path: Path) -> list[int]:
    """Postmasters (and the pooler's PgBouncer) whose command line names a path under `path` (`postgres -D <dir>`)."""
    out = subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True, check=False).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("postgres", "postmaster", "pgbouncer"):
                pids.append(pid)
        except OSError:
            pass
    return pids


def kill_postgres_under(path: Path) -> None:
    for sig in (signal.SIGQUIT, signal.SIGKILL):  # immediate shutdown, then no questions asked
        pids = postgres_pids(path)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
            time.sleep(0.05)


@dataclass
class LocalStack:
    base: Path
    port: int
    password: str
    runner: ScriptRunner = field(default_factory=ScriptRunner)
    applied: list[Declared] = field(default_factory=list)  # what the "state" holds
    evaluation: Evaluation = field(default_factory=Evaluation)  # the program as last declared
    boot_id: str = field(default_factory=boot_id)  # the program reads it; a test may pretend the machine rebooted
    pooler_port: int = field(default_factory=free_port)  # issue 19: PgBouncer's (local.poolerPort)

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def verified(self) -> str:
        """The query every URL of the stack carries: verify-full against the cluster's CA file."""
        return f"sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/:')}"

    @property
    def ca_file(self) -> Path:
        """The cluster's own CA (create.sh), which every URL names as sslrootcert."""
        return self.data_dir / "tls" / "ca.crt"

    def declare(self, replicas: int) -> list[Declared]:
        """The real program with Pulumi.local.yaml, on this test's port and directory, as `pulumi up` evaluates it."""
        config = stack_config("local", {
            "gaia-db:readReplicas": replicas,
            "gaia-db:local": {"port": self.port, "dataDir": str(self.data_dir), "poolerPort": self.pooler_port},
        })
        # What the primary's script printed (its CA certificate) once it ran, as the engine would hand it back.
        runs = [run for run in self.runner.runs if run.resource.endswith("-primary") and run.phase != "delete"]
        printed = {"-primary": runs[-1].stdout} if runs else {}
        with mock.patch("components.local.boot_id", return_value=self.boot_id):
            self.evaluation = evaluate("local", config, cloud=FakeCloud(passwords={"-admin-password": self.password},
                                                                        command_stdout=printed))
        return self.evaluation.resources

    def apply(self, declared: list[Declared]) -> dict[str, str]:
        """Bring the applied declaration to `declared` like `pulumi up`; returns each Command's step."""
        old = {d.name: d for d in self.applied if d.type == COMMAND}
        new = commands_in_order(declared)
        steps: dict[str, str] = {}
        for gone in reversed(commands_in_order(self.applied)):
            if gone.name not in {d.name for d in new}:
                self.runner.run(gone, "delete")
                steps[gone.name] = "delete"
        for resource in new:
            before = old.get(resource.name)
            if before is None:
                self.runner.run(resource, "create")
                steps[resource.name] = "create"
            elif before.inputs == resource.inputs:
                steps[resource.name] = "same"
            elif before.inputs.get("triggers") != resource.inputs.get("triggers"):
                self.runner.run(before, "delete")  # delete_before_replace
                self.runner.run(resource, "create")
                steps[resource.name] = "replace"
            else:
                self.runner.run(resource, "update")
                steps[resource.name] = "update"
        self.applied = declared
        return steps

    def create_again(self) -> list[ScriptRun]:
        """Every create script once more, in order, on the running cluster."""
        return [self.runner.run(resource, "create") for resource in commands_in_order(self.applied)]

    def destroy(self) -> None:
        for resource in reversed(commands_in_order(self.applied)):
            self.runner.run(resource, "delete")
        self.applied = []

    # --- talking to the servers ---

    def connect(self, port: int | None = None, **overrides: Any) -> psycopg.Connection[Any]:
        params: dict[str, Any] = {
            "host": "127.0.0.1", "port": port or self.port, "dbname": "gaia_dev", "user": ADMIN_USER,
            "password": self.password, "sslmode": "verify-full", "sslrootcert": str(self.ca_file),
            "connect_timeout": 5, "autocommit": True,
        }
        params.update(overrides)
        return psycopg.connect(**params)

    def query(self, sql: str, port: int | None = None) -> Any:
        with self.connect(port) as conn:
            return one_row(conn, sql)[0]

    def superuser_sql(self, sql: str) -> str:
        """As the superuser over the cluster's private socket (the only way in for it)."""
        cmd = as_server_user(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(self.data_dir / "run"),
                              "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql])
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/").stdout.strip()

    def streaming(self) -> list[str]:
        """The replicas streaming from the primary (by application name)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1"
            ).fetchall()
        return [row[0] for row in rows]

    def replication_report(self) -> str:
        with self.connect() as conn:
            return repr(conn.execute("SELECT application_name, state, sent_lsn, replay_lsn, replay_lag "
                                     "FROM pg_stat_replication").fetchall())

    def node_identity(self, port: int) -> tuple[int, str]:
        """(postmaster pid, start time): both change whenever that server restarts."""
        started = str(self.query("SELECT pg_postmaster_start_time()", port))
        pid = int((self.data_dir / self.node_dir(port) / "postmaster.pid").read_text().split()[0])
        return pid, started

    def node_dir(self, port: int) -> str:
        return "primary" if port == self.port else f"replica-{port - self.port}"


def one_row(conn: psycopg.Connection[Any], sql: str) -> tuple[Any, ...]:
    row = conn.execute(sql).fetchone()
    assert row is not None, sql
    return tuple(row)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """A two-replica local stack, declared under the mock engine and created by its own scripts; always torn down."""
    base = server_tmpdir("gaia e2e-", owned=False)  # a space in the path keeps the scripts' quoting honest
    local = LocalStack(base=base, port=free_port(4), password=secrets.token_urlsafe(18) + "'\"$\\ ;x")
    try:
        local.apply(local.declare(replicas=2))
        yield local
    finally:
        kill_postgres_under(base)
        shutil.rmtree(base, ignore_errors=True)


# --- what the program declares ------------------------------------------------------------------------------


def test_declares_a_primary_and_a_replicas_command_under_the_cluster(stack: LocalStack) -> None:
    declared = stack.applied
    (cluster,) = [d for d in declared if d.type == "gaia:local:PostgresCluster"]
    commands = {c.name: c for c in commands_in_order(declared)}
    assert set(commands) == {"gaia-db-local-primary", "gaia-db-local-replicas", "gaia-db-local-pooler"}
    primary, replicas, pooler = (commands[f"gaia-db-local-{n}"] for n in ("primary", "replicas", "pooler"))
    assert primary.parent == replicas.parent == pooler.parent == cluster.urn
    assert primary.urn in replicas.dependencies and primary.urn in pooler.dependencies
    for command in (primary, replicas, pooler):
        assert command.inputs["interpreter"] == ["/bin/bash", "-c"]
        assert command.inputs["logging"] == "stderr"
        assert command.inputs["addPreviousOutputInEnv"] is False
        assert command.inputs["update"] == command.inputs["create"]  # scripts converge
        assert command.inputs["triggers"] == [str(stack.data_dir), stack.port]
        # A new directory or port replaces the command, and the engine deletes the old cluster first (same port,
        # same directory), as apply() above does; Pulumi's default would start the new one beside the old.
        assert command.delete_before_replace
        assert command.inputs["environment"]["GAIA_DATA_DIR"] == str(stack.data_dir)
    assert replicas.inputs["environment"]["GAIA_REPLICAS"] == "2"
    assert "GAIA_REPLICAS" not in primary.inputs["environment"]  # a new count never touches the primary

    outputs = cluster.outputs
    assert outputs["host"] == "127.0.0.1" and outputs["port"] == stack.port
    assert outputs["databaseName"] == "gaia_dev" and outputs["adminUser"] == ADMIN_USER
    assert outputs["readers"] == [{"host": "127.0.0.1", "port": stack.port + 1},
                                  {"host": "127.0.0.1", "port": stack.port + 2}]
    assert "adminPassword" in cluster.secret_outputs


def test_the_password_is_a_secret_input_and_in_no_script(stack: LocalStack) -> None:
    commands = {c.name: c for c in commands_in_order(stack.applied)}
    primary, replicas = commands["gaia-db-local-primary"], commands["gaia-db-local-replicas"]
    # The SDK makes a map holding a secret a secret as a whole: the primary's environment is one secret value.
    assert "environment" in primary.secret_inputs
    assert primary.inputs["environment"]["GAIA_ADMIN_PASSWORD"] == stack.password
    assert "environment" not in replicas.secret_inputs  # it holds no secret, so it stays readable
    for resource in stack.applied:
        for key, value in resource.inputs.items():
            if key not in resource.secret_inputs:
                for text in strings(value):
                    assert stack.password not in text, f"{resource.name} declares the password in the clear"
    for script in SCRIPTS_DIR.glob("local/*.sh"):
        assert stack.password not in script.read_text()
        assert "set -x" not in script.read_text()


# --- the running cluster -------------------------------------------------------------------------------------


def test_admin_logs_in_over_tls_only_and_is_not_a_superuser(stack: LocalStack) -> None:
    with stack.connect() as conn:
        ssl, superuser, createrole, owner = one_row(
            conn,
            "SELECT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), rolsuper, rolcreaterole, "
            "(SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()) "
            "FROM pg_roles WHERE rolname = current_user",
        )
    assert ssl is True and superuser is False and createrole is True and owner == ADMIN_USER
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        stack.connect(sslmode="disable").close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        stack.connect(password="wrong").close()
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        stack.connect(user="postgres", password="").close()


def test_server_settings_statements_slow_queries_and_localhost_only(stack: LocalStack) -> None:
    with stack.connect() as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_preload_libraries', "
            "'log_min_duration_statement', 'listen_addresses', 'ssl', 'archive_mode', 'port')"
        ).fetchall())
        calls = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
    assert settings == {"shared_preload_libraries": "pg_stat_statements", "log_min_duration_statement": "100",
                        "listen_addresses": "127.0.0.1", "ssl": "on", "archive_mode": "on",
                        "port": str(stack.port)}
    assert calls is not None and calls[0] > 0


RELEASE = "pulumi-python:dynamic/gaia:Release"


def test_the_release_runs_in_the_provider_process_and_the_service_urls_have_their_rights(stack: LocalStack) -> None:
    """The deploy's last step as the engine drives it, then the stack outputs used the way a service would."""
    release = stack.evaluation.one(RELEASE)
    assert {r.urn for r in commands_in_order(stack.applied)} <= set(release.dependencies)
    props = dict(release.inputs, __provider=serialized_release_provider())
    started = time.monotonic()
    with ProviderProcess() as provider:
        provider.configure()
        checked, failures = provider.check(props)
        assert failures == []
        id_, outs = provider.create(checked)
        assert provider.diff(id_, outs, checked).changes == provider_pb2.DiffResponse.DIFF_NONE
    print(f"release through the provider process: {time.monotonic() - started:.2f} s")
    assert outs["revision"] == head_revision()
    # Finding 8: the local admin is no superuser, so create.sh switched utility tracking and statement logging off for
    # its sessions: the SCRAM verifiers the release sent are neither in pg_stat_statements nor in the server log.
    verifiers = "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%SCRAM-SHA-256$%'"
    assert stack.query(verifiers) == 0  # the admin is in pg_monitor: it sees every statement's text
    assert not any("SCRAM-SHA-256$" in log.read_text(errors="replace") for log in (stack.data_dir / "log").glob("*"))
    # Nor did the admin's own password, which create.sh set as the superuser: no password statement of any session
    # is in pg_stat_statements (its utility statements are kept verbatim), and the password is nowhere in it.
    with stack.connect() as conn:
        texts = [str(row[0]) for row in conn.execute("SELECT query FROM pg_stat_statements").fetchall()]
    assert texts, "pg_stat_statements records this cluster's statements"
    assert not [t for t in texts if re.search(r"\bPASSWORD\s+'", t, re.IGNORECASE)], texts
    assert not [t for t in texts if stack.password in t or stack.password.replace("'", "''") in t]

    outputs = stack.evaluation.outputs
    # sslmode=verify-full against the cluster's own CA, as the output says
    with psycopg.connect(outputs["databaseUrl"], autocommit=True) as conn:
        ssl, revision = one_row(conn, "SELECT (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), "
                                      "(SELECT version_num FROM alembic_version)")
        assert (ssl, revision) == (True, head_revision())
        active = conn.execute("SELECT k.key_hash FROM api_keys k JOIN users u ON u.id = k.user_id "
                              "WHERE k.is_active AND u.email = 'admin@dev.gaia.com'").fetchall()
        assert active == [(key_hash(outputs["adminApiKey"]),)]
        insert_sample_rows(conn)
    for service in SERVICES:
        url = outputs["serviceUrls"][service]
        assert url.endswith(f"@127.0.0.1:{stack.port}/gaia_dev?{stack.verified}")
        with psycopg.connect(url, autocommit=True) as conn:
            assert one_row(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == (True,)
            assert rights(conn) == ALLOWED[service], service
    # Issue 10, item 4: each replica's reader URL logs in as the read-only gaia_reader (never the admin), reads what
    # DESIGN.md gives it and writes nothing; each service's own login works on each replica too.
    admin_password = parse_url(outputs["databaseUrl"]).password
    assert len(outputs["readerUrls"]) == 2
    for number, reader in enumerate(outputs["readerUrls"], start=1):
        assert reader.endswith(f"@127.0.0.1:{stack.port + number}/gaia_dev?{stack.verified}")
        assert admin_password not in reader and f"{ADMIN_USER}:" not in reader
        with psycopg.connect(reader, autocommit=True) as conn:  # the schema and the sample rows reached the replica
            assert wait_until(lambda c=conn: one_row(c, "SELECT count(*) FROM assets")[0] == 1)
            assert one_row(conn, "SELECT current_user, pg_is_in_recovery(), inet_server_port(), "
                                 "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())") == (
                "gaia_reader", True, stack.port + number, True)
            assert one_row(conn, "SELECT count(*) FROM users WHERE email = 'u@x.io'") == (1,)
            assert one_row(conn, "SELECT count(*) FROM chat_messages") == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # api_keys without key_hash
                conn.execute("SELECT key_hash FROM api_keys")
            # Not a write on a standby (that is refused for anyone): the role itself may not write, as on the primary.
            for write in ("INSERT INTO users (email) VALUES ('r@x.io')", "DELETE FROM assets", "TRUNCATE users"):
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    conn.execute(write)  # type: ignore[arg-type]
        health = check(reader, timeout=5)  # operations check a replica with its reader URL (docs/RUNBOOK.md)
        assert health["status"] == "healthy", health
    reader_on_primary = outputs["readerUrls"][0].replace(f":{stack.port + 1}/", f":{stack.port}/")
    with psycopg.connect(reader_on_primary, autocommit=True) as conn:
        assert rights(conn) == ALLOWED["reader"]
    assert set(outputs["serviceReaderUrls"]) == set(SERVICES)
    for service, urls in outputs["serviceReaderUrls"].items():
        assert [u.rsplit("@", 1)[1] for u in urls] == [r.rsplit("@", 1)[1] for r in outputs["readerUrls"]]
        for url in urls:
            assert admin_password not in url
            with psycopg.connect(url) as conn:
                assert one_row(conn, "SELECT current_user, pg_is_in_recovery()") == (f"gaia_{service}", True)


def probe_rows(stack: LocalStack, port: int, where: str = "true") -> int:
    """Rows of e2e_probe matching `where` on the server at `port`; 0 on a replica that has not replayed the table's
    CREATE yet."""
    try:
        return int(stack.query(f"SELECT count(*) FROM e2e_probe WHERE {where}", port))
    except psycopg.errors.UndefinedTable:
        return 0


def test_both_replicas_stream_what_the_primary_writes(stack: LocalStack) -> None:
    token = secrets.token_hex(8)
    with stack.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e_probe (token text)")
        conn.execute("INSERT INTO e2e_probe VALUES (%s)", (token,))
    assert stack.streaming() == ["gaia-replica-1", "gaia-replica-2"], stack.replication_report()
    for replica in (stack.port + 1, stack.port + 2):
        assert stack.query("SELECT pg_is_in_recovery()", replica) is True
        assert wait_until(lambda port=replica: probe_rows(stack, port, f"token = '{token}'"), timeout=5), \
            f"port {replica} lacks the row: {stack.replication_report()}"


def test_wal_is_archived_into_the_data_directory(stack: LocalStack) -> None:
    with stack.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e_probe (token text)")
        conn.execute("INSERT INTO e2e_probe VALUES ('archive me')")
    segment = stack.superuser_sql("SELECT pg_walfile_name(pg_switch_wal())")
    archived = stack.data_dir / "wal-archive" / segment
    assert wait_until(archived.exists, timeout=10), f"{segment} was not archived"
    with stack.connect() as conn:
        count, failed = one_row(conn, "SELECT archived_count, failed_count FROM pg_stat_archiver")
    assert count >= 1 and failed == 0


def test_running_create_again_changes_nothing(stack: LocalStack) -> None:
    ports = [stack.port, stack.port + 1, stack.port + 2]
    before = {port: stack.node_identity(port) for port in ports}
    runs = stack.create_again()
    assert {port: stack.node_identity(port) for port in ports} == before
    log = "".join(run.stderr for run in runs)
    assert "primary already running" in log and "already logs in with its password" in log
    assert "replica-1 already running" in log and "replica-2 already running" in log
    for word in ("created:", "initialising", "pg_basebackup", "restarting", "setting the password"):
        assert word not in log


def test_after_a_reboot_the_next_deploy_starts_the_servers_again(stack: LocalStack) -> None:
    ports = [stack.port, stack.port + 1, stack.port + 2]
    before = {port: stack.node_identity(port) for port in ports}
    kill_postgres_under(stack.data_dir)  # immediate shutdown: the next start recovers from WAL, as after a crash
    assert postgres_pids(stack.data_dir) == []
    stack.boot_id = "the machine rebooted"
    steps = stack.apply(stack.declare(replicas=2))
    assert steps == {"gaia-db-local-primary": "update", "gaia-db-local-replicas": "update",
                     "gaia-db-local-pooler": "update"}
    for port in ports:
        assert stack.node_identity(port) != before[port]
        # The data survived. A replica restarted after a crash takes connections once consistent, which can be
        # before it has replayed all the WAL it holds: it gets there, it is not there at once.
        assert wait_until(lambda port=port: probe_rows(stack, port) > 0, timeout=10), stack.replication_report()
    assert stack.streaming() == ["gaia-replica-1", "gaia-replica-2"]


def test_fewer_read_replicas_updates_only_the_replicas(stack: LocalStack) -> None:
    primary_before = stack.node_identity(stack.port)
    replica_before = stack.node_identity(stack.port + 1)
    steps = stack.apply(stack.declare(replicas=1))
    assert steps == {"gaia-db-local-primary": "same", "gaia-db-local-replicas": "update",
                     "gaia-db-local-pooler": "same"}
    assert stack.node_identity(stack.port) == primary_before
    assert stack.node_identity(stack.port + 1) == replica_before
    assert not (stack.data_dir / "replica-2").exists()
    assert len(postgres_pids(stack.data_dir)) == 3  # the primary, replica-1 and PgBouncer
    assert stack.streaming() == ["gaia-replica-1"]
    assert stack.query("SELECT string_agg(slot_name, ',') FROM pg_replication_slots") == "gaia_replica_1"
    with pytest.raises(psycopg.OperationalError):
        stack.connect(stack.port + 2).close()


def test_delete_stops_every_server_and_removes_the_directory(stack: LocalStack) -> None:
    logs = "".join(p.read_text(errors="replace") for p in (stack.data_dir / "log").glob("*.log"))
    assert logs and stack.password not in logs
    stack.destroy()
    assert postgres_pids(stack.data_dir) == []
    assert not stack.data_dir.exists()
    # Nothing any script printed, on any step, carried the password.
    assert stack.runner.runs
    for run in stack.runner.runs:
        assert stack.password not in run.stdout + run.stderr, f"{run.resource} {run.phase} printed the password"
        assert "\n+ " not in run.stderr  # no xtrace


# --- failing clearly -----------------------------------------------------------------------------------------


def error_line(run: ScriptRun) -> str:
    lines = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_delete_leaves_a_directory_that_is_not_a_gaia_cluster_alone() -> None:
    """A local.dataDir pointed at the wrong directory: delete refuses rather than remove what is there."""
    base = server_tmpdir("gaia-e2e-notours-", owned=False)
    try:
        local = LocalStack(base=base, port=free_port(), password="irrelevant-password")
        primary, *_ = commands_in_order(local.declare(replicas=0))
        local.data_dir.mkdir(parents=True)
        (local.data_dir / "thesis.tex").write_text("years of work")
        run = local.runner.run(primary, "delete", check=False)
        assert run.returncode != 0
        assert "is not a gaia-db local cluster" in error_line(run)
        assert (local.data_dir / "thesis.tex").read_text() == "years of work"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_missing_server_binaries_say_what_to_install() -> None:
    base = server_tmpdir("gaia-e2e-nobin-", owned=False)
    try:
        local = LocalStack(base=base, port=free_port(), password="irrelevant-password",
                           runner=ScriptRunner({"GAIA_PG_BINDIR": str(base / "no-such-bin")}))
        primary, *_ = commands_in_order(local.declare(replicas=0))
        run = local.runner.run(primary, "create", check=False)
        assert run.returncode != 0
        line = error_line(run)
        assert "No PostgreSQL server binaries" in line and "apt-get install postgresql" in line
        assert not local.data_dir.exists()  # nothing was touched
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_data_directory_the_server_cannot_reach_fails_clearly() -> None:
    base = Path(tempfile.mkdtemp(prefix="gaia-e2e-private-"))  # mode 0700, ours: not a server_tmpdir, on purpose
    try:
        if os.geteuid() != 0:
            base.chmod(0o500)  # not even we may create it: the same clear refusal, for the other reason
        local = LocalStack(base=base, port=free_port(), password="irrelevant-password")
        primary, *_ = commands_in_order(local.declare(replicas=0))
        run = local.runner.run(primary, "create", check=False)
        assert run.returncode != 0
        line = error_line(run)
        assert "gaia-db:local.dataDir" in line and str(base) in line
        assert not local.data_dir.exists() and postgres_pids(base) == []
    finally:
        base.chmod(0o700)
        kill_postgres_under(base)
        shutil.rmtree(base, ignore_errors=True)
