"""The Fly provider's scripts, executed for real against a recording `fly` that checks flags against flyctl's.

The real program (`__main__.py`) is evaluated for a Fly stack (Pulumi.<env>.yaml) under the SDK's mock engine, as
`pulumi up` evaluates it (tests/program.py); each Command's `create`/`update`/`delete` text and `environment` are taken
from what the engine received and run with `bash -c`, with tests/e2e/fakes/fly first on PATH. The fake keeps state, so
a second create finds the cluster, an update sees the machines the create made, and delete removes them.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import PgServer
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
QUERIES = {("postgres", "list"), ("apps", "list"), ("machine", "list"), ("volumes", "list"), ("secrets", "list"),
           ("orgs", "list"), ("postgres", "backup", "config", "show")}
# The scripts' health-check wait, shortened: the fake's late clusters come up after a few listings.
QUICK_WAIT = {"GAIA_FLY_HEALTH_WAIT_SECONDS": "2", "GAIA_FLY_POLL_SECONDS": "0.1"}


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
    admin password set to TOKEN and PASSWORD; `cluster_stdout` is what the cluster script printed, when it ran.
    Each distinct config is evaluated once; every caller gets its own copy (a test may change what it got)."""
    return Program(copy.deepcopy(_evaluated(env, cluster_stdout, json.dumps(extra, sort_keys=True))))


@functools.cache
def _evaluated(env: str, cluster_stdout: str | None, extra: str) -> Evaluation:
    config = provider_config(env, "fly", flyApiToken=TOKEN, **json.loads(extra))
    cloud = FakeCloud(passwords={"-admin-password": PASSWORD}, cluster_stdout=cluster_stdout)
    evaluation = evaluate(env, config, cloud=cloud)
    assert evaluation.outputs["databaseUrl"].endswith("?sslmode=disable")  # Fly Postgres serves no TLS
    return evaluation


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
        path = self.state_dir / "state.json"
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"apps": {}}
        return state

    def app(self, name: str) -> dict[str, Any]:
        app: dict[str, Any] = self.state()["apps"][name]
        return app

    def edit(self, change: Any) -> None:
        state = self.state()
        change(state)
        (self.state_dir / "state.json").write_text(json.dumps(state))

    def run(self, declared: Declared, phase: str, path: str | None = None, **extra: str) -> tuple[
            subprocess.CompletedProcess[str], list[list[str]]]:
        """Runs the declared script as pulumi-command does (its environment on top of ours, `extra` on top of that,
        e.g. FAKE_FLY_FAIL_AT); returns the new calls."""
        before = len(self.calls())
        env = {
            "PATH": path or self.path,
            "HOME": str(self.root),
            "FAKE_FLY_STATE": str(self.state_dir),
            # A stale token in the caller's shell: flyctl would prefer it, so the scripts must drop it.
            "FLY_ACCESS_TOKEN": "stale-token-from-the-shell",
            **QUICK_WAIT,
            **declared.inputs["environment"],
            **extra,
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
    # The scripts read flyctl's JSON with the machine's python3, as on an engineer's machine; ours where it has none
    # (a link to a venv's python outside the venv starts as the base interpreter, several times slower here).
    if shutil.which("python3", path="/usr/bin:/bin") is None:
        (bin_dir / "python3").symlink_to(sys.executable)
    return Fly(tmp_path)


def ok(result: tuple[subprocess.CompletedProcess[str], list[list[str]]]) -> tuple[
        subprocess.CompletedProcess[str], list[list[str]]]:
    done, calls = result
    assert done.returncode == 0, done.stderr
    return done, calls


def changes(calls: list[list[str]]) -> list[list[str]]:
    """The calls that change something, a marker's random value shown as `…`."""
    return [[re.sub(r"^(GAIA_DB_CLUSTER_\w+)=[0-9a-f]{32}$", r"\1=…", arg) for arg in argv] for argv in calls
            if not any(tuple(argv[:n]) in QUERIES for n in (2, 4))]


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


def markers(app: str) -> list[list[str]]:
    """The two staged secrets that make a cluster this stack's own (lib.sh)."""
    return [["secrets", "set", "--stage", "--app", app, f"GAIA_DB_CLUSTER_{name}=…"] for name in ("ID", "READY")]


def cluster_id(fly: Fly, app: str) -> str:
    done = subprocess.run(["fly", "secrets", "list", "--app", app, "--json"], capture_output=True, text=True,
                          check=True, env={"PATH": fly.path, "FAKE_FLY_STATE": str(fly.state_dir),
                                           "FLY_API_TOKEN": TOKEN})
    return str(next(s["digest"] for s in json.loads(done.stdout) if s["name"] == "GAIA_DB_CLUSTER_ID"))


def check_admin_password(fly: Fly, program: Program, app_name: str) -> None:
    """The password command makes the stack's password the `postgres` user's, through stdin only, as a verifier."""
    assert fly.app(app_name)["deployed"]["OPERATOR_PASSWORD"] != PASSWORD
    _, calls = ok(fly.run(program.password, "create"))
    assert changes(calls) == [
        ["ssh", "console", "--app", app_name, "--quiet", "--command", "connect"],  # database + current verifier
        ["ssh", "console", "--app", app_name, "--quiet", "--command", "connect"],  # ALTER ROLE
        ["secrets", "import", "--app", app_name],
    ]
    app = fly.app(app_name)
    assert app["deployed"]["OPERATOR_PASSWORD"] == PASSWORD
    assert app["verifier"].startswith("SCRAM-SHA-256$4096:")
    new = fly.calls()[-3:]
    # The server is sent a verifier, never the password, with tracking and statement logging off.
    alter = new[1]["stdin"]
    assert PASSWORD not in alter and "Adm1n" not in alter and f"PASSWORD '{app['verifier']}';" in alter
    assert "SET LOCAL pg_stat_statements.track_utility = off;" in alter
    assert "SET LOCAL log_min_error_statement = panic;" in alter
    assert new[2]["stdin"] == f'OPERATOR_PASSWORD="""{PASSWORD}"""\n'
    # No flyctl process inherited the password: it travels on stdin only.
    assert all("GAIA_FLY_ADMIN_PASSWORD" not in call["env"] for call in new)
    # Again (e.g. after the token changed): the fake's psql logged in with the new OPERATOR_PASSWORD against the new
    # verifier, the script found that the verifier matches, and nothing is altered or restarted.
    done, calls = ok(fly.run(program.password, "update"))
    assert changes(calls) == [["ssh", "console", "--app", app_name, "--quiet", "--command", "connect"]]
    assert "already has the stack's admin password" in done.stderr


def test_dev_create_twice_resize_and_delete(fly: Fly) -> None:
    dev = declare("dev")
    created, calls = ok(fly.run(dev.cluster, "create"))
    primary, replicas = machine_ids(fly, "gaia-db-dev")
    (volume,) = volumes(fly, "gaia-db-dev")
    assert replicas == []
    assert changes(calls) == [
        ["postgres", "create", "--name", "gaia-db-dev", "--org", "gaia", "--region", "lax",
         "--vm-size", "shared-cpu-1x", "--vm-memory", "256", "--volume-size", "10", "--initial-cluster-size", "1"],
        *markers("gaia-db-dev"),
        ["volumes", "update", volume, "--app", "gaia-db-dev", "--snapshot-retention", "1", "--scheduled-snapshots"],
    ]
    app = fly.app("gaia-db-dev")
    assert app["machines"][0]["config"]["guest"] == {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    assert "S3_ARCHIVE_CONFIG" not in app["secrets"]  # dev keeps daily snapshots, no WAL archive
    summary = json.loads(created.stdout)
    assert summary == {"clusterId": cluster_id(fly, "gaia-db-dev"), "primary": primary, "replicas": []}
    check_admin_password(fly, dev, "gaia-db-dev")

    # A second create (e.g. state lost) finds the cluster: nothing is created or changed.
    again, calls = ok(fly.run(dev.cluster, "create"))
    assert changes(calls) == [] and json.loads(again.stdout) == summary
    assert list(fly.state()["apps"]) == ["gaia-db-dev"]

    # Grow it: 2 CPUs / 1 GB, 20 GB, one replica.
    bigger = {"size": {"cpus": 2, "memoryMb": 1024, "storageGb": 20}}
    _, calls = ok(fly.run(declare("dev", readReplicas=1, **bigger).cluster, "update"))
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

    # Back to the tier's replica count: taken from the tier, it removes nothing and says how to.
    done, calls = ok(fly.run(declare("dev", **bigger).cluster, "update"))
    assert changes(calls) == [] and len(machine_ids(fly, "gaia-db-dev")[1]) == 1
    assert "keeping all 2 machines of gaia-db-dev, more than the tier's 1; set readReplicas to 0" in done.stderr
    # Set by the stack itself, it does: the standby and its volume go, the primary stays.
    _, calls = ok(fly.run(declare("dev", readReplicas=0, **bigger).cluster, "update"))
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
    (machine,) = [m["id"] for m in fly.app("gaia-db-staging")["machines"]]
    assert changes(calls) == [
        ["postgres", "create", "--name", "gaia-db-staging", "--org", "gaia", "--region", "lax",
         "--vm-size", "shared-cpu-2x", "--vm-memory", "1024", "--volume-size", "50", "--initial-cluster-size", "1",
         "--enable-backups"],
        *markers("gaia-db-staging"),
        ["volumes", "update", volume, "--app", "gaia-db-staging", "--snapshot-retention", "3",
         "--scheduled-snapshots"],
        # barman's default window is 7d; postgres-flex applies a new one only after a restart.
        ["postgres", "backup", "config", "update", "--app", "gaia-db-staging", "--recovery-window", "3d"],
        ["postgres", "restart", "--app", "gaia-db-staging"],
    ]
    app = fly.app("gaia-db-staging")
    assert app["deployed"]["S3_ARCHIVE_CONFIG"] and app["backup_config"]["recovery_window"] == "3d"
    assert app["restarts"] == [machine]
    # 2 shared CPUs with 1 GB, not the 4 GB `--vm-size shared-cpu-2x` alone would give.
    assert app["machines"][0]["config"]["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 1024}
    check_admin_password(fly, staging, "gaia-db-staging")

    # Every secret lists as "Staged" on a pg-flex app; the leader says the archive is live, so nothing restarts.
    assert {s["status"] for s in json.loads(subprocess.run(
        ["fly", "secrets", "list", "-a", "gaia-db-staging", "--json"], capture_output=True, text=True, check=True,
        env={"PATH": fly.path, "FAKE_FLY_STATE": str(fly.state_dir), "FLY_API_TOKEN": TOKEN}).stdout)} == {"Staged"}
    _, again = ok(fly.run(staging.cluster, "create"))
    assert changes(again) == []

    # The archive secret stored but never deployed (a run stopped between the two): deployed now, nothing else.
    fly.edit(lambda state: state["apps"]["gaia-db-staging"]["deployed"].pop("S3_ARCHIVE_CONFIG"))
    _, calls = ok(fly.run(staging.cluster, "update"))
    assert changes(calls) == [["secrets", "deploy", "--app", "gaia-db-staging"]]

    # A cluster made before backups were wanted: the update enables them and restarts the machines with them.
    def forget_backups(state: dict[str, Any]) -> None:
        app = state["apps"]["gaia-db-staging"]
        for secrets in (app["secrets"], app["deployed"]):
            for name in ("S3_ARCHIVE_CONFIG", "BUCKET_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                         "AWS_ENDPOINT_URL_S3"):
                secrets.pop(name)
        state["buckets"] = {}

    fly.edit(forget_backups)
    done, calls = ok(fly.run(staging.cluster, "update"))
    assert changes(calls) == [
        ["postgres", "backup", "enable", "--app", "gaia-db-staging"],
        ["secrets", "deploy", "--app", "gaia-db-staging"],
    ]
    assert fly.app("gaia-db-staging")["deployed"]["S3_ARCHIVE_CONFIG"]
    # backup enable prints the bucket's secret key on stdout: discarded, never in the logged stderr.
    secret_key = fly.app("gaia-db-staging")["secrets"]["AWS_SECRET_ACCESS_KEY"]
    assert secret_key not in done.stderr and secret_key not in done.stdout

    # Deleting the stack removes the WAL bucket too, which `fly apps destroy` leaves behind.
    assert list(fly.state()["buckets"]) == ["gaia-db-staging-postgres"]
    _, calls = ok(fly.run(staging.cluster, "delete"))
    assert changes(calls) == [["storage", "destroy", "--app", "gaia-db-staging", "--yes"],
                              ["apps", "destroy", "gaia-db-staging", "--yes"]]
    assert fly.state()["buckets"] == {} and fly.state()["apps"] == {}
    assert_no_secret_in_argv(fly)


def test_prod_has_two_replicas_on_performance_cpus_and_readers_on_them(fly: Fly) -> None:
    prod = declare("prod")
    created, calls = ok(fly.run(prod.cluster, "create"))
    assert changes(calls)[0] == [
        "postgres", "create", "--name", "gaia-db-prod", "--org", "gaia", "--region", "lax",
        "--vm-size", "performance-8x", "--vm-memory", "16384", "--volume-size", "500", "--initial-cluster-size", "3",
        "--enable-backups",
    ]
    # barman's default window is prod's 7d already: nothing to set, nothing to restart.
    assert changes(calls)[-1][:2] == ["volumes", "update"] and fly.app("gaia-db-prod")["restarts"] == []
    primary, replicas = machine_ids(fly, "gaia-db-prod")
    assert json.loads(created.stdout)["replicas"] == sorted(replicas) and len(replicas) == 2
    check_admin_password(fly, prod, "gaia-db-prod")

    # The script's summary becomes the component's readers: one per standby, on postgres' own port.
    component = declare("prod", cluster_stdout=created.stdout).component
    outputs = component.outputs
    assert outputs["readers"] == [{"host": f"{r}.vm.gaia-db-prod.internal", "port": 5433} for r in sorted(replicas)]
    assert (outputs["host"], outputs["port"], outputs["adminUser"], outputs["databaseName"]) == (
        "gaia-db-prod.flycast", 5432, "postgres", "postgres")
    assert outputs["adminPassword"] == PASSWORD and "adminPassword" in component.secret_outputs

    # A longer recovery window: set, then the cluster restarted standbys first so barman uses it.
    _, calls = ok(fly.run(declare("prod", backupRetentionDays=14).cluster, "update"))
    assert changes(calls)[-2:] == [
        ["postgres", "backup", "config", "update", "--app", "gaia-db-prod", "--recovery-window", "14d"],
        ["postgres", "restart", "--app", "gaia-db-prod"],
    ]
    app = fly.app("gaia-db-prod")
    assert app["backup_config"]["recovery_window"] == "14d" and app["restarts"][-3:] == [*sorted(replicas,
        key=[m["id"] for m in app["machines"]].index), primary]

    _, calls = ok(fly.run(declare("prod", readReplicas=1).cluster, "update"))
    assert [argv[:2] for argv in changes(calls)] == [["machine", "destroy"], ["volumes", "destroy"],
                                                      *[["volumes", "update"]] * 2,  # snapshots kept 7 days again
                                                      ["postgres", "backup"], ["postgres", "restart"]]
    assert machine_ids(fly, "gaia-db-prod")[0] == primary and len(fly.app("gaia-db-prod")["machines"]) == 2
    assert_no_secret_in_argv(fly)


def test_flyctl_exiting_0_on_a_refused_window_is_a_failure(fly: Fly) -> None:
    staging = declare("staging")
    ok(fly.run(staging.cluster, "create"))
    # flexctl prints its error on stdout and flyctl exits 0 (internal/command/postgres/postgres.go ExecOnMachine).
    done, calls = fly.run(staging.cluster, "update", GAIA_FLY_RECOVERY_WINDOW="5x")
    assert done.returncode == 1 and changes(calls)[-1][:4] == ["postgres", "backup", "config", "update"]
    assert "did not set the recovery window 5x on gaia-db-staging: error updating configuration: invalid value" \
        in done.stderr
    assert fly.app("gaia-db-staging")["restarts"] == [fly.app("gaia-db-staging")["machines"][0]["id"]]  # the first


# --- an interrupted create converges ------------------------------------------------------------------------------

# flypg/launcher.go's steps, and the machine a per-machine step fails on (prod creates three, one at a time).
CREATE_FAILURES = [("staging", "app", 0), ("staging", "ip", 0), ("staging", "tigris", 0),
                   ("staging", "secrets", 0), ("staging", "volume", 0), ("staging", "launch", 0),
                   ("staging", "health", 0), ("prod", "volume", 1), ("prod", "launch", 2), ("prod", "health", 0)]


@pytest.mark.parametrize(("env", "step", "machine"), CREATE_FAILURES)
def test_a_create_that_failed_at_any_step_converges_on_the_next_run(fly: Fly, env: str, step: str,
                                                                     machine: int) -> None:
    program = declare(env)
    app_name = f"gaia-db-{env}"
    done, _ = fly.run(program.cluster, "create", FAKE_FLY_FAIL_AT=step, FAKE_FLY_FAIL_MACHINE=str(machine))
    assert done.returncode == 1
    assert "fly postgres create stopped halfway (Error: " in done.stderr and "run pulumi up again" in done.stderr
    if step == "health":  # flyctl's progress reaches the log as it comes, not only its final error
        assert "to become healthy (started, 1/3)" in done.stderr
    left = fly.state()["apps"].get(app_name)
    assert (left is None) == (step == "app")  # flyctl never rolls back

    done, calls = ok(fly.run(program.cluster, "create"))
    app = fly.app(app_name)
    size = {"staging": 1, "prod": 3}[env]
    roles = sorted(m["checks"][0]["output"] for m in app["machines"] if m["checks"][0]["status"] == "passing")
    assert roles == ["primary"] + ["replica"] * (size - 1)
    assert {"GAIA_DB_CLUSTER_ID", "GAIA_DB_CLUSTER_READY", "S3_ARCHIVE_CONFIG"} <= set(app["deployed"]) | set(
        app["secrets"])
    assert app["backup_config"]["recovery_window"] == {"staging": "3d", "prod": "7d"}[env]
    # Exactly one WAL bucket, the app's own: a discarded attempt's bucket went with it.
    assert [b["app"] for b in fly.state().get("buckets", {}).values()] == [app_name]
    remade = [argv for argv in changes(calls) if argv[:2] == ["apps", "destroy"]]
    if left is not None and not left["machines"]:
        # Nothing of it ever ran: destroyed and made again, and the run says so.
        assert remade == [["apps", "destroy", app_name, "--yes"]]
        assert "nothing in it holds data; destroying it and creating it again" in done.stderr
    elif left is not None:
        # Its first machine ran: finished in place, the missing standbys cloned from the primary.
        assert remade == [] and "finishing " + app_name in done.stderr
        assert [m for m in left["machines"] if m["id"] in {x["id"] for x in app["machines"]}] != []
    # A volume whose machine never launched is kept and reported, never extended or destroyed.
    strays = [v for v in app["volumes"] if v["attached_machine_id"] is None]
    assert len(strays) == (1 if step == "launch" and machine > 0 else 0)
    for stray in strays:
        assert f"volume {stray['id']} of {app_name} is attached to no machine" in done.stderr
    assert "tsec_" not in done.stderr  # the Tigris secret key flyctl prints never reaches the logged stderr


def test_a_cluster_that_never_became_healthy_is_made_again(fly: Fly) -> None:
    program = declare("staging")
    fly.run(program.cluster, "create", FAKE_FLY_FAIL_AT="health")
    fly.edit(lambda state: [m.update(healthy_after=10_000) for m in state["apps"]["gaia-db-staging"]["machines"]])
    done, calls = ok(fly.run(program.cluster, "create"))
    assert "no machine of gaia-db-staging became primary; it has never served" in done.stderr
    assert ["apps", "destroy", "gaia-db-staging", "--yes"] in changes(calls)
    assert machine_ids(fly, "gaia-db-staging")[0]


def test_a_cluster_that_served_is_never_destroyed_when_it_has_no_primary(fly: Fly) -> None:
    program = declare("dev")
    ok(fly.run(program.cluster, "create"))
    fly.edit(lambda state: [m.update(healthy_after=10_000) or m["checks"][0].update(status="critical")
                            for m in state["apps"]["gaia-db-dev"]["machines"]])
    done, calls = fly.run(program.cluster, "update")
    assert done.returncode == 1 and changes(calls) == []
    assert "no machine of gaia-db-dev reports the primary role" in done.stderr and "nothing was changed" in done.stderr


def test_a_recreated_cluster_gets_the_stack_password_again(fly: Fly) -> None:
    program = declare("dev")
    first, _ = ok(fly.run(program.cluster, "create"))
    ok(fly.run(program.password, "create"))
    # Destroyed outside Pulumi; the next update makes it again, with flyctl's random password.
    ok(fly.run(program.cluster, "delete"))
    second, _ = ok(fly.run(program.cluster, "update"))
    assert json.loads(first.stdout)["clusterId"] != json.loads(second.stdout)["clusterId"]
    # The password resource's trigger is the new cluster's id, so the engine replaces it and the password is set.
    before = declare("dev", cluster_stdout=first.stdout).password.inputs["triggers"]
    after = declare("dev", cluster_stdout=second.stdout).password.inputs["triggers"]
    assert before != after and after == [json.loads(second.stdout)["clusterId"]]
    check_admin_password(fly, program, "gaia-db-dev")


# --- Tigris's terms, organizations, global names ------------------------------------------------------------------


def test_unaccepted_tigris_terms_stop_with_the_one_time_step_and_leave_nothing(fly: Fly) -> None:
    fly.edit(lambda state: state.update(tos_agreed=False))
    done, _ = fly.run(declare("staging").cluster, "create")
    assert done.returncode == 1
    assert "has not accepted Tigris's terms" in done.stderr and "fly storage create --org gaia" in done.stderr
    assert fly.state()["apps"] == {} and fly.state().get("buckets", {}) == {}  # the app flyctl left is gone
    # Backups turned on for an existing cluster: `backup enable` asks the same, and the same sentence stops it.
    ok(fly.run(declare("dev").cluster, "create"))
    wal = declare("dev", size={"cpus": 1, "memoryMb": 512, "storageGb": 10})
    wal.cluster.inputs["environment"].update(GAIA_FLY_WAL_BACKUPS="true", GAIA_FLY_RECOVERY_WINDOW="1d")
    done, _ = fly.run(wal.cluster, "update")
    assert done.returncode == 1 and "has not accepted Tigris's terms" in done.stderr
    fly.edit(lambda state: state.update(tos_agreed=True))
    ok(fly.run(declare("staging").cluster, "create"))


def test_a_personal_organization_is_named_personal(fly: Fly) -> None:
    done, calls = fly.run(declare("dev", fly={"org": "ada-lovelace-339"}).cluster, "create")
    assert done.returncode == 1 and changes(calls) == []
    assert "fly.org is ada-lovelace-339, which is not an organization slug this token can use (personal,gaia)" \
        in done.stderr and "use personal" in done.stderr
    ok(fly.run(declare("dev", fly={"org": "personal"}).cluster, "create"))
    assert fly.app("gaia-db-dev")["org"] == "personal"


def test_a_globally_taken_app_name_asks_for_fly_app_name(fly: Fly) -> None:
    fly.edit(lambda state: state.update(foreign_apps=["gaia-db-dev"]))
    done, calls = fly.run(declare("dev").cluster, "create")
    assert done.returncode == 1 and [argv[:2] for argv in changes(calls)] == [["postgres", "create"]]
    assert "the Fly app name gaia-db-dev is already taken by an app this token cannot see" in done.stderr
    assert "set fly.appName" in done.stderr and fly.state()["apps"] == {}
    renamed = declare("dev", fly={"org": "gaia", "appName": "gaia-db-dev-acme"})
    ok(fly.run(renamed.cluster, "create"))
    assert renamed.evaluation.outputs["host"] == "gaia-db-dev-acme.flycast"
    assert renamed.password.inputs["environment"]["GAIA_FLY_APP"] == "gaia-db-dev-acme"


# --- adopting the cluster Gaia runs today -------------------------------------------------------------------------


def seed_cluster(fly: Fly, app: str, *, machines: int, size: str, memory: str, volume_gb: int,
                 backups: bool = False) -> str:
    """A cluster made by hand, as the seed's scripts made gaia-db-<env>; returns flyctl's generated password."""
    done = subprocess.run(
        ["fly", "postgres", "create", "--name", app, "--org", "gaia", "--region", "lax", "--vm-size", size,
         "--vm-memory", memory, "--volume-size", str(volume_gb), "--initial-cluster-size", str(machines),
         *(["--enable-backups"] if backups else [])],
        env={"PATH": fly.path, "FAKE_FLY_STATE": str(fly.state_dir), "FLY_API_TOKEN": TOKEN},
        capture_output=True, text=True, check=True)
    return re.search(r"Password:\s+(\S+)", done.stdout).group(1)  # type: ignore[union-attr]


def test_an_existing_cluster_is_adopted_without_shrinking_or_restarting(fly: Fly) -> None:
    existing = seed_cluster(fly, "gaia-db-dev", machines=3, size="shared-cpu-2x", memory="1024", volume_gb=40)
    before = json.loads(json.dumps(fly.app("gaia-db-dev")))

    # Without its password the stack will not take it over: it would lock out everything that logs in as postgres.
    done, calls = fly.run(declare("dev").cluster, "create")
    assert done.returncode == 1 and changes(calls) == []
    assert "gaia-db-dev exists but was not created by this stack" in done.stderr and "adminPassword" in done.stderr

    adopting = declare("dev", adminPassword=existing, databaseName="gaia")
    assert adopting.cluster.inputs["environment"]["GAIA_FLY_ADMIN_PASSWORD_GIVEN"] == "true"
    assert adopting.password.inputs["environment"]["GAIA_FLY_ADMIN_PASSWORD"] == existing
    done, calls = ok(fly.run(adopting.cluster, "create"))
    # Only the markers: no machine, VM, volume or backup is cut down to the dev tier.
    assert changes(calls) == [*markers("gaia-db-dev"), ["secrets", "set", "--stage", "--app", "gaia-db-dev",
                                                         "GAIA_DB_CLUSTER_ADOPTED=…"]]
    after = fly.app("gaia-db-dev")
    assert [m["config"]["guest"] for m in after["machines"]] == [m["config"]["guest"] for m in before["machines"]]
    assert [v["size_gb"] for v in after["volumes"]] == [40, 40, 40]
    assert "adopting gaia-db-dev" in done.stderr
    assert "keeping all 3 machines of gaia-db-dev, more than the tier's 1" in done.stderr
    assert "more than the tier's shared-cpu-1x / 256 MB; set size to change it" in done.stderr
    assert "is 40 GB, more than size.storageGb 10; Fly volumes cannot shrink, so it keeps 40 GB" in done.stderr
    assert "snapshots 5 days, longer than the tier's 1; set backupRetentionDays to change it" in done.stderr
    assert [v["snapshot_retention"] for v in after["volumes"]] == [5, 5, 5]

    # Its password is already the stack's: nothing is altered, no machine restarts; the database is created.
    done, calls = ok(fly.run(adopting.password, "create"))
    assert [argv[:2] for argv in changes(calls)] == [["ssh", "console"]]
    assert fly.app("gaia-db-dev")["databases"] == ["postgres", "gaia"]
    assert fly.app("gaia-db-dev")["deployed"]["OPERATOR_PASSWORD"] == existing

    # The hand-over to a generated password is the later, explicit step: adminPassword removed.
    check_admin_password(fly, declare("dev"), "gaia-db-dev")
    # What the stack sets itself applies: one day of snapshots, one machine.
    _, calls = ok(fly.run(declare("dev", backupRetentionDays=1, readReplicas=0).cluster, "update"))
    assert [argv[:2] for argv in changes(calls)] == [["machine", "destroy"], ["volumes", "destroy"]] * 2 + [
        ["volumes", "update"]]
    assert [v["snapshot_retention"] for v in fly.app("gaia-db-dev")["volumes"]] == [1]


def test_a_cluster_this_stack_made_before_the_markers_is_marked_on_update_not_adopted(fly: Fly) -> None:
    program = declare("dev")
    first, _ = ok(fly.run(program.cluster, "create"))
    # As an earlier gaia-db left it: no marker secrets.
    fly.edit(lambda state: [state["apps"]["gaia-db-dev"]["secrets"].pop(name)
                            for name in ("GAIA_DB_CLUSTER_ID", "GAIA_DB_CLUSTER_READY")])
    # Its resource is in the stack's state, so Pulumi runs the update: no adminPassword needed, nothing adopted.
    done, calls = ok(fly.run(program.cluster, "update"))
    assert changes(calls) == markers("gaia-db-dev")
    assert "which this stack created before it kept marker secrets" in done.stderr
    assert json.loads(done.stdout)["clusterId"] != json.loads(first.stdout)["clusterId"]
    # A create (no state for it) still refuses an unmarked cluster without its password.
    fly.edit(lambda state: [state["apps"]["gaia-db-dev"]["secrets"].pop(name)
                            for name in ("GAIA_DB_CLUSTER_ID", "GAIA_DB_CLUSTER_READY")])
    done, _ = fly.run(program.cluster, "create")
    assert done.returncode == 1 and "was not created by this stack" in done.stderr


def test_an_adopted_cluster_keeps_its_longer_wal_window(fly: Fly) -> None:
    existing = seed_cluster(fly, "gaia-db-staging", machines=1, size="shared-cpu-2x", memory="1024", volume_gb=50,
                            backups=True)
    done, calls = ok(fly.run(declare("staging", adminPassword=existing).cluster, "create"))
    assert not [argv for argv in changes(calls) if argv[:2] in (["postgres", "backup"], ["postgres", "restart"])]
    assert "keeping gaia-db-staging's WAL recovery window of 7d, longer than the tier's 3d" in done.stderr
    assert fly.app("gaia-db-staging")["backup_config"]["recovery_window"] == "7d"
    _, calls = ok(fly.run(declare("staging", adminPassword=existing, backupRetentionDays=3).cluster, "update"))
    assert fly.app("gaia-db-staging")["backup_config"]["recovery_window"] == "3d"


# --- the SQL the password script sends, on a real PostgreSQL ------------------------------------------------------


def test_the_password_statement_works_on_postgresql_and_leaves_no_trace(fly: Fly, pg: PgServer) -> None:
    program = declare("dev")
    ok(fly.run(program.cluster, "create"))
    ok(fly.run(program.password, "create"))
    alter = fly.calls()[-2]["stdin"].replace("ALTER ROLE postgres", "ALTER ROLE fly_probe")
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS fly_probe")
        conn.execute("CREATE ROLE fly_probe")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    psql = subprocess.run(["psql", "-X", "-d", pg.url()], input=alter, capture_output=True, text=True, check=False)
    assert psql.returncode == 0, psql.stderr
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="fly_probe", password=PASSWORD,
                         dbname="postgres") as probe:
        assert probe.execute("SELECT current_user").fetchone() == ("fly_probe",)
    verifier = fly.app("gaia-db-dev")["verifier"]
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        tracked = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%fly_probe%'").fetchone()
        assert tracked == (0,)
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'fly_probe'").fetchone()
        assert stored == (verifier,)
        conn.execute("DROP ROLE fly_probe")
    assert verifier not in pg.log_file.read_text() and PASSWORD not in pg.log_file.read_text()


# --- what the engine is told --------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_commands_carry_secrets_only_in_their_secret_environment(env: str) -> None:
    program = declare(env)
    assert set(program.commands) == {f"gaia-db-{env}-cluster", f"gaia-db-{env}-postgres-password"}
    cluster, password = program.cluster, program.password
    # The plain settings head the create and update text, so a preview shows what moves (the environment is secret).
    header, _, create = cluster.inputs["create"].partition("\n")
    assert create == load("common.sh", "fly/lib.sh", "fly/create.sh")
    assert cluster.inputs["update"] == f"{header}\n" + load("common.sh", "fly/lib.sh", "fly/update.sh")
    assert cluster.inputs["delete"] == load("common.sh", "fly/lib.sh", "fly/delete.sh")
    set_password = load("common.sh", "fly/lib.sh", "fly/set-password.sh")
    assert password.inputs["create"] == password.inputs["update"] == set_password
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
                                                   "GAIA_FLY_ADMIN_PASSWORD", "GAIA_FLY_DATABASE"}
    # Whatever would shrink the cluster is allowed only by the stack's own size / readReplicas.
    assert (plain["GAIA_FLY_EXACT_SIZE"], plain["GAIA_FLY_EXACT_REPLICAS"], plain["GAIA_FLY_EXACT_RETENTION"]) == (
        "false", "false", "false")
    assert plain["GAIA_FLY_ADMIN_PASSWORD_GIVEN"] == "false"
    # The password is re-applied to a new cluster: the trigger is the id its creation staged.
    assert password.inputs["triggers"] == ["digest-1"]
    assert cluster.inputs["logging"] == "stderr"  # progress only; flyctl's password-bearing stdout is discarded
    assert password.inputs["logging"] == "none" and password.inputs["addPreviousOutputInEnv"] is False
    assert cluster.protect is (env != "dev") and password.protect is False


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


def test_a_larger_volume_is_kept_and_reported(fly: Fly) -> None:
    ok(fly.run(declare("dev", size={"cpus": 1, "memoryMb": 256, "storageGb": 30}).cluster, "create"))
    done, calls = ok(fly.run(declare("dev").cluster, "update"))
    assert changes(calls) == [] and [v["size_gb"] for v in fly.app("gaia-db-dev")["volumes"]] == [30]
    assert "is 30 GB, more than size.storageGb 10; Fly volumes cannot shrink, so it keeps 30 GB" in done.stderr


def test_a_cluster_in_another_org_is_left_alone(fly: Fly) -> None:
    ok(fly.run(declare("dev").cluster, "create"))
    elsewhere = declare("dev", fly={"org": "someone-else"})
    for phase in ("create", "delete"):
        done, calls = fly.run(elsewhere.cluster, phase)
        assert done.returncode == 1 and changes(calls) == []
        assert "gaia-db-dev" in done.stderr and "organization gaia," in done.stderr
    assert "gaia-db-dev" in fly.state()["apps"]


@pytest.mark.parametrize("password", ['has"quote', "two\nlines", "pässword", "tab\there"])
def test_a_password_flyctl_cannot_import_is_refused(fly: Fly, password: str) -> None:
    program = declare("dev")
    ok(fly.run(program.cluster, "create"))
    program.password.inputs["environment"]["GAIA_FLY_ADMIN_PASSWORD"] = password
    done, calls = fly.run(program.password, "create")
    assert done.returncode == 1 and calls == []
    assert "must be printable ASCII without a double quote" in done.stderr


def test_the_fake_rejects_what_flyctl_rejects(fly: Fly) -> None:
    env = {"PATH": fly.path, "FAKE_FLY_STATE": str(fly.state_dir), "FLY_API_TOKEN": TOKEN}

    def fake(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["fly", *argv], env=env, capture_output=True, text=True, check=False)

    assert "unknown flag: --vm-mem" in fake("postgres", "create", "--name", "x", "--vm-mem", "256").stderr
    assert "unknown flag: --yes" in fake("postgres", "create", "--name", "x", "--yes").stderr
    assert 'invalid argument "ten"' in fake("pg", "create", "--volume-size", "ten").stderr
    assert "prompt: non interactive" in fake("postgres", "create", "--name", "x", "--org", "gaia").stderr
    assert "yes flag must be specified" in fake("apps", "destroy", "x").stderr
    no_token = subprocess.run(["fly", "postgres", "list"], env={**env, "FLY_API_TOKEN": ""}, capture_output=True,
                              text=True, check=False)
    assert no_token.returncode == 1 and "No access token available" in no_token.stderr
    # --vm-size alone means flyctl's postgres table: shared-cpu-2x is 4 GB.
    done = fake("postgres", "create", "--name", "t", "--org", "gaia", "--region", "lax", "--vm-size", "shared-cpu-2x",
                "--volume-size", "1", "--initial-cluster-size", "1")
    assert done.returncode == 0 and fly.app("t")["machines"][0]["config"]["guest"]["memory_mb"] == 4096
    # The Machines API's memory rules: performance CPUs take 2-8 GB per CPU in 1 GB steps.
    bad = fake("postgres", "create", "--name", "u", "--org", "gaia", "--region", "lax", "--vm-size", "performance-1x",
               "--vm-memory", "2304", "--volume-size", "1", "--initial-cluster-size", "1")
    assert bad.returncode == 1 and "in steps of 1024 MB" in bad.stderr
    assert all(call["exit"] != 0 for call in fly.calls()[:6])
    assert os.access(FAKE_FLY, os.X_OK)
    # `--org` names a slug: a personal organization is "personal", never its raw slug (internal/prompt/prompt.go).
    assert "organization ada-339 not found" in fake("pg", "create", "--name", "v", "--org", "ada-339", "--region",
                                                    "lax", "--vm-size", "shared-cpu-1x", "--volume-size", "1",
                                                    "--initial-cluster-size", "1").stderr
    # Aliases belong to their command, as cobra's do: `machine rm`, `volumes delete`, `apps remove` exist,
    # `machine delete` and `volumes remove` do not.
    for argv in (["machine", "rm", "--app", "t"], ["volumes", "delete", "--app", "t", "--yes"],
                 ["apps", "remove", "--yes", "nope"], ["m", "ls", "--app", "t"]):
        assert "unknown command" not in fake(*argv).stderr, argv
    for argv in (["machine", "delete", "x", "--app", "t"], ["volumes", "remove", "x", "--app", "t"],
                 ["secrets", "rm", "--app", "t"], ["ls"]):
        assert "unknown command" in fake(*argv).stderr, argv
