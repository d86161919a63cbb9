"""The Fly provider's scripts, executed for real against a recording `fly` that checks flags against flyctl's.

The real program (`__main__.py`) is evaluated for a Fly stack (Pulumi.<env>.yaml) under the SDK's mock engine, as
`pulumi up` evaluates it (tests/program.py); each Command's `create`/`update`/`delete` text and `environment` are taken
from what the engine received and run with `bash -c`, with tests/e2e/fakes/fly first on PATH. The fake keeps state, so
a second create finds the cluster, an update sees the machines the create made, and delete removes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from program import Declared, Evaluation, FakeCloud, evaluate, provider_config

from components.scripts import INTERPRETER, load
from components.settings import SettingsError

FAKE_FLY = Path(__file__).parent / "fakes" / "fly"
TOKEN = "fo1_token-7ZqK2mW"
# A quote, a hash, a dollar and a backslash: each breaks a naive SQL literal, shell word or secrets-import line.
PASSWORD = "Adm1n'pa#ss$wo\\rd-7Qx"
COMMAND = "command:local:Command"
CLUSTER = "gaia:fly:PostgresCluster"
# Read-only flyctl calls; everything else changes the cluster.
QUERIES = {("postgres", "list"), ("apps", "list"), ("machine", "list"), ("volumes", "list"), ("secrets", "list")}


@dataclass
class Program:
    """What the program declared for a Fly stack."""

    evaluation: Evaluation

    @property
    def commands(self) -> dict[str, Declared]:
        return {command.name: command for command in self.evaluation.of_type(COMMAND)}

    @property
    def cluster(self) -> Declared:
        return self.evaluation.one(COMMAND, "-cluster")

    @property
    def password(self) -> Declared:
        return self.evaluation.one(COMMAND, "-postgres-password")

    @property
    def component(self) -> Declared:
        """The FlyCluster component, with the outputs it registered."""
        return self.evaluation.one(CLUSTER)


def declare(env: str, cluster_stdout: str | None = None, **extra: Any) -> Program:
    """The program for Pulumi.<env>.yaml on Fly with the `gaia-db:` keys in `extra` on top, the stack's token and
    admin password set to TOKEN and PASSWORD; `cluster_stdout` is what the cluster script printed, when it ran."""
    config = provider_config(env, "fly", flyApiToken=TOKEN, **extra)
    cloud = FakeCloud(passwords={"-admin-password": PASSWORD}, cluster_stdout=cluster_stdout)
    program = Program(evaluate(env, config, cloud=cloud))
    assert program.evaluation.outputs["databaseUrl"].endswith("?sslmode=disable")  # Fly Postgres serves no TLS
    return program


# --- running the scripts ------------------------------------------------------------------------------------------


@dataclass
class Fly:
    """The fake's state directory, its recorded calls, and a PATH with it first."""

    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def path(self) -> str:
        return f"{self.root / 'bin'}:/usr/bin:/bin"

    def calls(self) -> list[dict[str, Any]]:
        log = self.state_dir / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        return state

    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.state()["apps"][name]
        return app

    def edit(self, change: Any) -> None:
        state = self.state()
        change(state)
        (self.state_dir / "state.json").write_text(json.dumps(state))

    def run(self, declared: Declared, phase: str, path: str | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                      list[list[str]]]:
        """Runs the declared script as pulumi-command does (its environment on top of ours); returns the new calls."""
        before = len(self.calls())
        env = {
            "PATH": path or self.path,
            "HOME": str(self.root),
            "FAKE_FLY_STATE": str(self.state_dir),
            # A stale token in the caller's shell: flyctl would prefer it, so the scripts must drop it.
            "FLY_ACCESS_TOKEN": "stale-token-from-the-shell",
            **declared.inputs["environment"],
        }
        script = declared.inputs[phase]
        assert declared.inputs["interpreter"] == INTERPRETER
        done = subprocess.run([*INTERPRETER, script], env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        return done, [call["argv"] for call in self.calls()[before:]]


@pytest.fixture
def fly(tmp_path: Path) -> Fly:
    (tmp_path / "state").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "fly"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE_FLY}" "$@"\n')  # -S: stdlib only, faster
    wrapper.chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)  # the scripts read flyctl's JSON with python3
    return Fly(tmp_path)


def ok(result: tuple[subprocess.CompletedProcess[str], list[list[str]]]) -> tuple[str, list[list[str]]]:
    done, calls = result
    assert done.returncode == 0, done.stderr
    return done.stdout, calls


def changes(calls: list[list[str]]) -> list[list[str]]:
    return [argv for argv in calls if tuple(argv[:2]) not in QUERIES]


def machine_ids(fly: Fly, app: str) -> tuple[str, list[str]]:
    machines = fly.app(app)["machines"]
    primary = next(m["id"] for m in machines if m["checks"][0]["output"] == "primary")
    return primary, [m["id"] for m in machines if m["id"] != primary]


def volumes(fly: Fly, app: str) -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in fly.app(app)["volumes"]}


def assert_no_secret_in_argv(fly: Fly) -> None:
    calls = fly.calls()
    assert calls
    for call in calls:
        assert not any(TOKEN in arg or PASSWORD in arg for arg in call["argv"]), call["argv"]
        assert call["token"] == TOKEN  # the stack's token reached flyctl through the environment, not the stale one


# --- the lifecycle per environment ------------------------------------------------------------------------------


def check_admin_password(fly: Fly, program: Program, app_name: str) -> None:
    """The password command makes the stack's password the `postgres` user's, through stdin only."""
    generated = fly.app(app_name)["db_password"]
    assert generated != PASSWORD
    _, calls = ok(fly.run(program.password, "create"))
    assert changes(calls) == [
        ["ssh", "console", "--app", app_name, "--quiet", "--command", "connect"],
        ["secrets", "import", "--app", app_name],
    ]
    app = fly.app(app_name)
    # The database and the secret postgres-flex logs in with on every boot now hold the stack's password.
    assert app["db_password"] == PASSWORD and app["deployed"]["OPERATOR_PASSWORD"] == PASSWORD
    stdin = {call["argv"][0]: call["stdin"] for call in fly.calls()[-2:]}
    assert stdin["ssh"] == (
        "\\set ON_ERROR_STOP on\nBEGIN;\nSET LOCAL log_statement = 'none';\n"
        "SET LOCAL log_min_duration_statement = -1;\n"
        "ALTER ROLE postgres WITH LOGIN PASSWORD 'Adm1n''pa#ss$wo\\rd-7Qx';\nCOMMIT;\n"
    )
    assert stdin["secrets"] == f'OPERATOR_PASSWORD="""{PASSWORD}"""\n'
    # Again (e.g. after the token changed): it authenticates with the password it set and keeps it.
    ok(fly.run(program.password, "update"))
    assert fly.app(app_name)["db_password"] == PASSWORD


def test_dev_create_twice_resize_and_delete(fly: Fly) -> None:
    dev = declare("dev")
    stdout, calls = ok(fly.run(dev.cluster, "create"))
    primary, replicas = machine_ids(fly, "gaia-db-dev")
    (volume,) = volumes(fly, "gaia-db-dev")
    assert replicas == []
    assert changes(calls) == [
        ["postgres", "create", "--name", "gaia-db-dev", "--org", "gaia", "--region", "lax",
         "--vm-size", "shared-cpu-1x", "--vm-memory", "256", "--volume-size", "10", "--initial-cluster-size", "1"],
        ["volumes", "update", volume, "--app", "gaia-db-dev", "--snapshot-retention", "1", "--scheduled-snapshots"],
    ]
    app = fly.app("gaia-db-dev")
    assert app["machines"][0]["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert "S3_ARCHIVE_CONFIG" not in app["secrets"]  # dev keeps daily snapshots, no WAL archive
    summary = json.loads(stdout)
    assert summary == {"appId": app["id"], "primary": primary, "replicas": []}
    check_admin_password(fly, dev, "gaia-db-dev")

    # A second create (e.g. state lost) finds the cluster: nothing is created or changed.
    _, again = ok(fly.run(dev.cluster, "create"))
    assert changes(again) == []
    assert list(fly.state()["apps"]) == ["gaia-db-dev"]

    # Grow it: 2 CPUs / 1 GB, 20 GB, one replica.
    bigger = declare("dev", size={"cpus": 2, "memoryMb": 1024, "storageGb": 20}, readReplicas=1)
    _, calls = ok(fly.run(bigger.cluster, "update"))
    _, (clone,) = machine_ids(fly, "gaia-db-dev")
    clone_volume = next(v for v in volumes(fly, "gaia-db-dev") if v != volume)
    assert changes(calls) == [
        ["machine", "update", primary, "--app", "gaia-db-dev", "--vm-size", "shared-cpu-2x", "--vm-memory", "1024",
         "--yes"],
        ["machine", "clone", primary, "--app", "gaia-db-dev", "--region", "lax"],
        # The clone's volume copies the source mount's recorded size, so it is extended too.
        ["volumes", "extend", volume, "--app", "gaia-db-dev", "--size", "20", "--yes"],
        ["volumes", "extend", clone_volume, "--app", "gaia-db-dev", "--size", "20", "--yes"],
        ["volumes", "update", clone_volume, "--app", "gaia-db-dev", "--snapshot-retention", "1",
         "--scheduled-snapshots"],
    ]
    assert all(m["config"]["guest"]["memory_mb"] == 1024 for m in fly.app("gaia-db-dev")["machines"])
    assert {v["size_gb"] for v in fly.app("gaia-db-dev")["volumes"]} == {20}

    # Shrink back to no replicas: the standby and its volume go, the primary stays.
    _, calls = ok(fly.run(declare("dev", size={"cpus": 2, "memoryMb": 1024, "storageGb": 20}).cluster, "update"))
    assert changes(calls) == [
        ["machine", "destroy", clone, "--app", "gaia-db-dev", "--force"],
        ["volumes", "destroy", clone_volume, "--app", "gaia-db-dev", "--yes"],
    ]
    assert machine_ids(fly, "gaia-db-dev") == (primary, [])

    _, calls = ok(fly.run(dev.cluster, "delete"))
    assert changes(calls) == [["apps", "destroy", "gaia-db-dev", "--yes"]]
    assert fly.state()["apps"] == {}
    _, calls = ok(fly.run(dev.cluster, "delete"))  # already gone: nothing to do
    assert changes(calls) == []
    assert_no_secret_in_argv(fly)


def test_staging_keeps_wal_backups_for_three_days(fly: Fly) -> None:
    staging = declare("staging")
    _, calls = ok(fly.run(staging.cluster, "create"))
    (volume,) = volumes(fly, "gaia-db-staging")
    assert changes(calls) == [
        ["postgres", "create", "--name", "gaia-db-staging", "--org", "gaia", "--region", "lax",
         "--vm-size", "shared-cpu-2x", "--vm-memory", "1024", "--volume-size", "50", "--initial-cluster-size", "1",
         "--enable-backups"],
        ["volumes", "update", volume, "--app", "gaia-db-staging", "--snapshot-retention", "3",
         "--scheduled-snapshots"],
        ["postgres", "backup", "config", "update", "--app", "gaia-db-staging", "--recovery-window", "3d"],
    ]
    app = fly.app("gaia-db-staging")
    assert app["deployed"]["S3_ARCHIVE_CONFIG"] and app["backup_config"] == {"recovery_window": "3d"}
    # 2 shared CPUs with 1 GB, not the 4 GB `--vm-size shared-cpu-2x` alone would give.
    assert app["machines"][0]["config"]["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}
    check_admin_password(fly, staging, "gaia-db-staging")

    _, again = ok(fly.run(staging.cluster, "create"))
    assert changes(again) == [
        ["postgres", "backup", "config", "update", "--app", "gaia-db-staging", "--recovery-window", "3d"],
    ]

    # A cluster made before backups were wanted: the update enables them and restarts the machines with them.
    def forget_backups(state: dict[str, Any]) -> None:
        app = state["apps"]["gaia-db-staging"]
        del app["secrets"]["S3_ARCHIVE_CONFIG"], app["deployed"]["S3_ARCHIVE_CONFIG"]

    fly.edit(forget_backups)
    assert "S3_ARCHIVE_CONFIG" not in fly.app("gaia-db-staging")["secrets"]
    _, calls = ok(fly.run(staging.cluster, "update"))
    assert changes(calls) == [
        ["postgres", "backup", "enable", "--app", "gaia-db-staging"],
        ["secrets", "deploy", "--app", "gaia-db-staging"],
        ["postgres", "backup", "config", "update", "--app", "gaia-db-staging", "--recovery-window", "3d"],
    ]
    assert fly.app("gaia-db-staging")["deployed"]["S3_ARCHIVE_CONFIG"]
    assert_no_secret_in_argv(fly)


def test_prod_has_two_replicas_on_performance_cpus_and_readers_on_them(fly: Fly) -> None:
    prod = declare("prod")
    stdout, calls = ok(fly.run(prod.cluster, "create"))
    assert changes(calls)[0] == [
        "postgres", "create", "--name", "gaia-db-prod", "--org", "gaia", "--region", "lax",
        "--vm-size", "performance-8x", "--vm-memory", "16384", "--volume-size", "500", "--initial-cluster-size", "3",
        "--enable-backups",
    ]
    assert changes(calls)[-1] == [
        "postgres", "backup", "config", "update", "--app", "gaia-db-prod", "--recovery-window", "7d",
    ]
    assert len(changes(calls)) == 1 + 3 + 1  # create, snapshot retention on each of the 3 volumes, WAL window
    primary, replicas = machine_ids(fly, "gaia-db-prod")
    assert json.loads(stdout)["replicas"] == sorted(replicas) and len(replicas) == 2
    check_admin_password(fly, prod, "gaia-db-prod")

    # The script's summary becomes the component's readers: one per standby, on postgres' own port.
    component = declare("prod", cluster_stdout=stdout).component
    outputs = component.outputs
    assert outputs["readers"] == [{"host": f"{r}.vm.gaia-db-prod.internal", "port": 5433} for r in sorted(replicas)]
    assert (outputs["host"], outputs["port"], outputs["adminUser"], outputs["databaseName"]) == (
        "gaia-db-prod.flycast", 5432, "postgres", "postgres")
    assert outputs["adminPassword"] == PASSWORD and "adminPassword" in component.secret_outputs

    _, calls = ok(fly.run(declare("prod", readReplicas=1).cluster, "update"))
    assert [argv[:2] for argv in changes(calls)] == [["machine", "destroy"], ["volumes", "destroy"],
                                                      ["postgres", "backup"]]
    assert machine_ids(fly, "gaia-db-prod")[0] == primary and len(fly.app("gaia-db-prod")["machines"]) == 2
    assert_no_secret_in_argv(fly)


# --- what the engine is told --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_commands_carry_secrets_only_in_their_secret_environment(env: str) -> None:
    program = declare(env)
    assert set(program.commands) == {f"gaia-db-{env}-cluster", f"gaia-db-{env}-postgres-password"}
    cluster, password = program.cluster, program.password
    # The plain settings head the create and update text, so a preview shows what moves (the environment is secret).
    header, _, create = cluster.inputs["create"].partition("\n")
    assert create == load("fly/lib.sh", "fly/create.sh")
    assert cluster.inputs["update"] == f"{header}\n" + load("fly/lib.sh", "fly/update.sh")
    assert cluster.inputs["delete"] == load("fly/lib.sh", "fly/delete.sh")
    assert password.inputs["create"] == password.inputs["update"] == load("fly/lib.sh", "fly/set-password.sh")
    assert "delete" not in password.inputs  # the app's destruction takes the password with it
    for command in (cluster, password):
        secret = "environment" in command.secret_inputs
        assert secret, "the environment holding the token must reach the engine as a secret"
        assert command.inputs["environment"]["FLY_API_TOKEN"] == TOKEN
        assert set(command.additional_secret_outputs) == {"stdout", "stderr"}
        text = json.dumps({k: v for k, v in command.inputs.items() if k != "environment"})
        assert TOKEN not in text and "Adm1n" not in text
    assert password.inputs["environment"]["GAIA_FLY_ADMIN_PASSWORD"] == PASSWORD
    assert "GAIA_FLY_ADMIN_PASSWORD" not in cluster.inputs["environment"]
    # No triggers: pulumi-command replaces a Command whose triggers change, and that would destroy the app.
    assert "triggers" not in cluster.inputs
    assert header.startswith("# gaia-db fly cluster: ")
    plain = json.loads(header.removeprefix("# gaia-db fly cluster: "))
    assert plain == {k: v for k, v in cluster.inputs["environment"].items() if k != "FLY_API_TOKEN"}
    assert plain["GAIA_FLY_CLUSTER_SIZE"] == {"dev": "1", "staging": "1", "prod": "3"}[env]
    # The password command sees only what set-password.sh reads, so a resize does not rerun it.
    assert set(password.inputs["environment"]) == {"FLY_API_TOKEN", "GAIA_FLY_APP", "GAIA_FLY_ORG",
                                                   "GAIA_FLY_ADMIN_PASSWORD"}
    assert cluster.inputs["logging"] == "stderr"  # progress only; flyctl's password-bearing stdout is discarded
    assert password.inputs["logging"] == "none" and password.inputs["addPreviousOutputInEnv"] is False
    assert cluster.protect is (env == "prod") and password.protect is False


def test_mpg_and_undersized_wal_backups_are_refused_before_anything_is_declared() -> None:
    with pytest.raises(SettingsError, match=r'fly\.flavor is "mpg", but Fly Managed Postgres is not supported yet'):
        declare("dev", fly={"org": "gaia", "flavor": "mpg"})
    with pytest.raises(SettingsError, match="WAL backups, which Fly only allows from 512 MB"):
        declare("staging", size={"cpus": 1, "memoryMb": 256, "storageGb": 10})


# --- failures are one clear sentence --------------------------------------------------------------------------------


def test_missing_flyctl_is_named(fly: Fly, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    done, calls = fly.run(declare("dev").cluster, "create", path=f"{bare}:/usr/bin:/bin")
    assert done.returncode == 1 and calls == []
    assert "fly (flyctl) is not installed; install it" in done.stderr


def test_a_volume_is_never_shrunk(fly: Fly) -> None:
    ok(fly.run(declare("dev", size={"cpus": 1, "memoryMb": 256, "storageGb": 30}).cluster, "create"))
    done, calls = fly.run(declare("dev").cluster, "update")
    assert done.returncode == 1 and changes(calls) == []
    assert "is 30 GB, more than size.storageGb 10; Fly volumes cannot shrink" in done.stderr


def test_a_cluster_in_another_org_is_left_alone(fly: Fly) -> None:
    ok(fly.run(declare("dev").cluster, "create"))
    elsewhere = declare("dev", fly={"org": "someone-else"})
    for phase in ("create", "delete"):
        done, calls = fly.run(elsewhere.cluster, phase)
        assert done.returncode == 1 and changes(calls) == []
        assert "gaia-db-dev" in done.stderr and "organization gaia," in done.stderr
    assert "gaia-db-dev" in fly.state()["apps"]


def test_a_password_flyctl_cannot_import_is_refused(fly: Fly) -> None:
    program = declare("dev")
    ok(fly.run(program.cluster, "create"))
    program.password.inputs["environment"]["GAIA_FLY_ADMIN_PASSWORD"] = 'has"quote'
    done, calls = fly.run(program.password, "create")
    assert done.returncode == 1 and calls == []
    assert "contains a double quote or a line break" in done.stderr


def test_the_fake_rejects_what_flyctl_rejects(fly: Fly) -> None:
    env = {"PATH": fly.path, "FAKE_FLY_STATE": str(fly.state_dir), "FLY_API_TOKEN": TOKEN}

    def fake(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["fly", *argv], env=env, capture_output=True, text=True, check=False)

    assert "unknown flag: --vm-mem" in fake("postgres", "create", "--name", "x", "--vm-mem", "256").stderr
    assert "unknown flag: --yes" in fake("postgres", "create", "--name", "x", "--yes").stderr
    assert 'invalid argument "ten"' in fake("pg", "create", "--volume-size", "ten").stderr
    assert "prompt: non interactive" in fake("postgres", "create", "--name", "x", "--org", "o").stderr
    assert "yes flag must be specified" in fake("apps", "destroy", "x").stderr
    no_token = subprocess.run(["fly", "postgres", "list"], env={**env, "FLY_API_TOKEN": ""}, capture_output=True,
                              text=True, check=False)
    assert no_token.returncode == 1 and "No access token available" in no_token.stderr
    # --vm-size alone means flyctl's postgres table: shared-cpu-2x is 4 GB.
    done = fake("postgres", "create", "--name", "t", "--org", "o", "--region", "lax", "--vm-size", "shared-cpu-2x",
                "--volume-size", "1", "--initial-cluster-size", "1")
    assert done.returncode == 0 and fly.app("t")["machines"][0]["config"]["guest"]["memory_mb"] == 4096
    # The Machines API's memory rules: performance CPUs take 2-8 GB per CPU in 1 GB steps.
    bad = fake("postgres", "create", "--name", "u", "--org", "o", "--region", "lax", "--vm-size", "performance-1x",
               "--vm-memory", "2304", "--volume-size", "1", "--initial-cluster-size", "1")
    assert bad.returncode == 1 and "in steps of 1024 MB" in bad.stderr
    assert all(call["exit"] != 0 for call in fly.calls()[:6])
    assert os.access(FAKE_FLY, os.X_OK)
