"""`python -m dbops import-plan` against the program it plans for: every entry is a resource the program declares (the
same URN, computed the way `pulumi import` computes it, the same type and parent), its id is the cloud name the
program gives the resource, and an instance imported with the stack's override keys previews as an update, never a
replacement (docs/lifecycle.json, through tests/unit/test_lifecycle.py's checks)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from typing import Any

import pytest
from program import PROJECT, Declared, Evaluation, evaluate, provider_config
from test_lifecycle import CLOUDSQL, RDS, replacing_changes, transition_problems

from dbops import cli, names
from dbops.errors import DbopsError
from dbops.import_plan import import_plan

GCP_PROJECT = "gaia-project"  # what tests/program.py's provider_config sets as gcp:project
CLOUDSQL_DATABASE = "gcp:sql/database:Database"
CLOUDSQL_USER = "gcp:sql/user:User"
# What the plan imports: everything that holds the data, and the Cloud SQL admin login (its name replaces it).
IMPORTED = {"aws": {RDS}, "gcp": {CLOUDSQL, CLOUDSQL_DATABASE, CLOUDSQL_USER}}
CASES = [(env, provider) for env in names.ENVIRONMENTS for provider in ("aws", "gcp")]


def urns(plan: dict[str, Any], stack: str) -> dict[str, str]:
    """Entry name -> the URN `pulumi import` gives it: the parent's qualified type chain, then its own type, then
    its logical name (pkg/cmd/pulumi/operations/import.go parseImportFile; no parent: a child of the stack)."""
    entries = {entry["name"]: entry for entry in plan["resources"]}

    def qualified_type(name: str) -> str:
        entry = entries[name]
        parent = entry.get("parent")
        return f"{qualified_type(parent)}${entry['type']}" if parent else entry["type"]

    return {name: f"urn:pulumi:{stack}::{PROJECT}::{qualified_type(name)}::{entry['logicalName']}"
            for name, entry in entries.items()}


def engine_urns(ev: Evaluation, stack: str) -> dict[str, Declared]:
    """The program's resources by the URN the engine gives them: the types of every ancestor below the stack, then
    the resource's own (the SDK's mock monitor builds its URNs differently: the stack type and the direct parent's
    type only, pulumi/runtime/mocks.py make_urn)."""
    by_urn = {r.urn: r for r in ev.resources}

    def chain(resource: Declared) -> str:
        parent = by_urn.get(resource.parent)
        return f"{chain(parent)}${resource.type}" if parent is not None else resource.type

    return {f"urn:pulumi:{stack}::{PROJECT}::{chain(r)}::{r.name}": r for r in ev.resources}


def plan_for(env: str, provider: str, **options: Any) -> dict[str, Any]:
    if provider == "gcp":
        options.setdefault("project", GCP_PROJECT)
    return import_plan(provider, env, **options)


def check_against_program(plan: dict[str, Any], ev: Evaluation, env: str, provider: str) -> None:
    declared = engine_urns(ev, env)
    by_mock_urn = {r.urn: r for r in ev.resources}
    planned = urns(plan, env)
    for entry in plan["resources"]:
        urn = planned[entry["name"]]
        assert urn in declared, f"{entry['name']}: the program declares no {urn}"
        resource = declared[urn]
        assert resource.type == entry["type"]
        assert resource.custom is not entry.get("component", False)
        assert ("id" in entry) is resource.custom
        parent = by_mock_urn.get(resource.parent)  # None: the stack (not recorded)
        if "parent" in entry:
            assert declared[planned[entry["parent"]]] is parent, f"{entry['name']}: parent {resource.parent}"
        else:
            assert parent is None and "::pulumi:pulumi:Stack::" in resource.parent
        if resource.custom:
            assert entry["id"] == cloud_id(resource, ev), entry
    # Exactly the resources that hold data or a name that cannot change: nothing left out, nothing extra.
    imported = {urn for urn, r in declared.items() if r.type in IMPORTED[provider]}
    assert imported == {planned[e["name"]] for e in plan["resources"] if "id" in e}


def cloud_id(resource: Declared, ev: Evaluation) -> str:
    """The id `pulumi import` needs for `resource`, from the cloud names the program gives it (the Import section
    of each resource's pulumi_aws / pulumi_gcp docstring)."""
    inputs = resource.inputs
    if resource.type == RDS:
        return str(inputs["identifier"])
    if resource.type == CLOUDSQL:
        return f"projects/{inputs['project']}/instances/{inputs['name']}"
    # The database and the user name their instance by the primary's name (an output the mock echoes).
    primary = next(r for r in ev.of_type(CLOUDSQL) if "masterInstanceName" not in r.inputs)
    instance = primary.inputs["name"]
    if resource.type == CLOUDSQL_DATABASE:
        return f"projects/{inputs['project']}/instances/{instance}/databases/{inputs['name']}"
    assert resource.type == CLOUDSQL_USER
    return f"{inputs['project']}/{instance}/{inputs['name']}"


@pytest.mark.parametrize(("env", "provider"), CASES, ids=[f"{e}-{p}" for e, p in CASES])
def test_the_plan_is_what_the_program_declares(env: str, provider: str) -> None:
    check_against_program(plan_for(env, provider), evaluate(env, provider_config(env, provider)), env, provider)


# An instance made outside the stack, with the override keys that describe it (docs/RUNBOOK.md §8).
ADOPTED: dict[str, dict[str, Any]] = {
    "aws": {"aws": {"identifier": "gaia-legacy-db", "masterUsername": "postgres", "storageEncrypted": False,
                    "subnetGroupName": "default"},
            "databaseName": "gaia"},
    "gcp": {"gcp": {"instanceName": "gaia-legacy-pg", "adminUser": "postgres", "allowPublicIp": True},
            "databaseName": "gaia"},
}
ADOPTED_OPTIONS = {
    "aws": {"identifier": "gaia-legacy-db"},
    "gcp": {"identifier": "gaia-legacy-pg", "admin_user": "postgres", "database_name": "gaia"},
}


@pytest.mark.parametrize(("env", "provider"), CASES, ids=[f"{e}-{p}" for e, p in CASES])
def test_the_plan_follows_the_override_keys(env: str, provider: str) -> None:
    ev = evaluate(env, provider_config(env, provider, **ADOPTED[provider]))
    check_against_program(plan_for(env, provider, **ADOPTED_OPTIONS[provider]), ev, env, provider)


def test_fewer_existing_replicas_are_imported_and_the_rest_created() -> None:
    plan = plan_for("prod", "aws", replicas=1)
    assert [e["id"] for e in plan["resources"] if "id" in e] == ["gaia-prod", "gaia-prod-replica-1"]


# --- the first preview after the import: what the cloud reports for the instance, against the program ---

def imported_state(provider: str, env: str, real: dict[str, Any], options: dict[str, Any]) -> Evaluation:
    """The stack's state right after `pulumi import`: the planned resources only, with the properties the cloud
    reports for an instance made outside the stack (`real`: input name -> value, per resource role), and without
    what the provider cannot read back (passwords)."""
    plan = plan_for(env, provider, **options)
    # The program's own declaration is the starting point: everything the overrides do not name is as declared.
    base = evaluate(env, provider_config(env, provider, **({"gcp": {"allowPublicIp": True}} if provider == "gcp"
                                                            else {})))
    planned = {urn for urn in urns(plan, env).values()}
    state = Evaluation()
    for urn, resource in engine_urns(base, env).items():
        if urn not in planned or not resource.custom:
            continue
        resource = copy.deepcopy(resource)
        role = "replica" if "replicateSourceDb" in resource.inputs or "masterInstanceName" in resource.inputs \
            else resource.type
        for key, value in real.get(role, {}).items():
            if key == "settings":
                resource.inputs["settings"].update(value)
            else:
                resource.inputs[key] = value(resource) if callable(value) else value
        resource.inputs.pop("password", None)
        state.resources.append(resource)
    return state


def _replica_index(resource: Declared) -> int:
    return int(resource.name.rsplit("-", 1)[1])


REAL: dict[str, dict[str, Any]] = {
    # `aws rds create-db-instance` with the CLI's defaults: unencrypted, the console's `postgres` master user.
    "aws": {
        RDS: {"identifier": "gaia-legacy-db", "username": "postgres", "dbName": "gaia", "storageEncrypted": False,
              "dbSubnetGroupName": "default"},
        "replica": {"identifier": lambda r: f"gaia-legacy-db-replica-{_replica_index(r)}",
                    "replicateSourceDb": "gaia-legacy-db", "storageEncrypted": False},
    },
    # A console-made instance on a private network, its `postgres` user, a database of its own name.
    "gcp": {
        CLOUDSQL: {"name": "gaia-legacy-pg", "settings": {"ipConfiguration": {
            "ipv4Enabled": False, "privateNetwork": "projects/gaia-project/global/networks/default",
            "sslMode": "ENCRYPTED_ONLY", "authorizedNetworks": []}}},
        "replica": {"name": lambda r: f"gaia-legacy-pg-replica-{_replica_index(r)}",
                    "masterInstanceName": "gaia-legacy-pg"},
        CLOUDSQL_DATABASE: {"name": "gaia", "instance": "gaia-legacy-pg"},
        CLOUDSQL_USER: {"name": "postgres", "instance": "gaia-legacy-pg"},
    },
}
ADOPTED_CONFIG: dict[str, dict[str, Any]] = {
    "aws": {"aws": {"identifier": "gaia-legacy-db", "masterUsername": "postgres", "storageEncrypted": False,
                    "subnetGroupName": "default"},
            "databaseName": "gaia"},
    "gcp": {"gcp": {"instanceName": "gaia-legacy-pg", "adminUser": "postgres",
                    "privateNetwork": "projects/gaia-project/global/networks/default",
                    "privateServicesAccess": "existing"},
            "databaseName": "gaia"},
}


def first_preview(env: str, provider: str, config: dict[str, Any]) -> list[str]:
    """What would replace an imported resource in the first `pulumi preview`, or break the declaration."""
    state = imported_state(provider, env, REAL[provider], ADOPTED_OPTIONS[provider])
    after = evaluate(env, provider_config(env, provider, adminPassword="the-existing-password", **config))
    declared = {r.urn: r for r in after.resources}
    problems = [f"{r.name}: imported but no longer declared (the up would delete it)"
                for r in state.resources if r.urn not in declared]
    for old in state.resources:
        if old.urn in declared:  # any replacement of an imported resource, data-holding or not
            new = declared[old.urn]
            reasons = replacing_changes(new.type, old.inputs, new.inputs, new.ignore_changes)
            problems += [f"{new.name} would be replaced ({', '.join(reasons)})"] if reasons else []
    return problems + transition_problems(state, after)


@pytest.mark.parametrize(("env", "provider"), CASES, ids=[f"{e}-{p}" for e, p in CASES])
def test_an_imported_instance_with_the_override_keys_previews_as_an_update(env: str, provider: str) -> None:
    assert first_preview(env, provider, ADOPTED_CONFIG[provider]) == []


@pytest.mark.parametrize(("env", "provider"), CASES, ids=[f"{e}-{p}" for e, p in CASES])
def test_without_the_override_keys_the_preview_would_replace_it(env: str, provider: str) -> None:
    problems = first_preview(env, provider, {"gcp": {"allowPublicIp": True}} if provider == "gcp" else {})
    assert any("primary would be replaced" in p for p in problems), problems
    if provider == "aws":
        reasons = next(p for p in problems if "primary would be replaced" in p)
        for key in ("username", "dbName", "storageEncrypted", "identifier"):
            assert key in reasons
    else:
        # The instance's name, and leaving a private network out of the config (the conditional "unset" rule).
        assert any("privateNetwork (unset" in p for p in problems), problems


def test_the_existing_master_password_is_the_one_declared() -> None:
    for provider in ("aws", "gcp"):
        ev = evaluate("prod", provider_config("prod", provider, adminPassword="the-existing-password",
                                              **ADOPTED_CONFIG[provider]))
        holder = ev.one(RDS, "-primary") if provider == "aws" else ev.one(CLOUDSQL_USER)
        assert holder.inputs["password"] == "the-existing-password" and "password" in holder.secret_inputs
        login = "postgres"
        assert f"//{login}:the-existing-password@" in ev.outputs["databaseUrl"]


def test_an_adopted_rds_instance_stays_in_its_subnet_group() -> None:
    ev = evaluate("prod", provider_config("prod", "aws", **ADOPTED["aws"]))
    assert ev.of_type("aws:rds/subnetGroup:SubnetGroup") == []
    assert ev.one(RDS, "-primary").inputs["dbSubnetGroupName"] == "default"


# --- the command ---

def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["import-plan", *argv])
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_the_command_prints_the_plan() -> None:
    code, out, err = run("--provider", "gcp", "--environment", "prod", "--project", GCP_PROJECT,
                         "--identifier", "gaia-legacy-pg", "--admin-user", "postgres", "--database-name", "gaia")
    assert code == 0 and err == ""
    assert json.loads(out) == plan_for("prod", "gcp", **ADOPTED_OPTIONS["gcp"])


@pytest.mark.parametrize(("argv", "message"), [
    (("--provider", "gcp", "--environment", "dev"), "needs --project"),
    (("--provider", "aws", "--environment", "dev", "--project", "p"), "--project name nothing an RDS import needs"),
    (("--provider", "aws", "--environment", "prod", "--replicas", "6"), "0 to 5 read replicas"),
])
def test_the_command_refuses_in_one_sentence(argv: tuple[str, ...], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 1 and out == "" and message in err and err.count("\n") == 1


def test_fly_and_local_have_nothing_to_import() -> None:
    assert run("--provider", "fly", "--environment", "dev")[0] == 1  # argparse: not a choice (misuse exits 1)
    with pytest.raises(DbopsError, match="adopted by name"):
        import_plan("fly", "dev")
