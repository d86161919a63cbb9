"""The publish command resources' scripts (issue 17), run for real against the recording `fly` and `gh` fakes.

The program is evaluated with `gaia-db:publish` under the mock engine (tests/program.py); each declared Command's
create/update/delete text and environment are run with `bash -c` as pulumi-command runs them (its environment on top
of ours; the previous run's stdout in PULUMI_COMMAND_STDOUT). The values must reach the CLIs on stdin only, and a
second `up` with nothing changed must call nothing that writes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from program import Declared, FakeCloud, evaluate, provider_config

from components.scripts import INTERPRETER
from dbops.names import SERVICES

FAKES = Path(__file__).parent / "fakes"
TOKEN = "fo1_publish-token"
GH_TOKEN = "github_pat_fine-grained-0123"
WORKFLOW_TOKEN = "ghs_workflow-token"
APPS = {service: f"gaia-{service}-staging" for service in SERVICES}
REPO, ENVIRONMENT = "gaia-platform/services", "staging"
FLY_WRITES = {("secrets", "import"), ("secrets", "set"), ("secrets", "unset"), ("secrets", "deploy")}


def declare(**publish: Any) -> tuple[dict[str, Declared], dict[str, Any]]:
    config = provider_config("staging", "aws", publish=publish, readReplicas=1)
    if "fly" in publish:
        config["gaia-db:flyApiToken"] = TOKEN
    ev = evaluate("staging", config, cloud=FakeCloud(), secret_keys=("gaia-db:flyApiToken",))
    commands = {c.name.split("-publish-")[1]: c for c in ev.of_type("command:local:Command") if "-publish-" in c.name}
    return commands, ev.outputs


def run(
    command: Declared, phase: str, tmp: Path, previous: str | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{tmp / 'bin'}:/usr/bin:/bin", "HOME": str(tmp), "FAKE_FLY_STATE": str(tmp / "fly"),
           "FAKE_GH_STATE": str(tmp / "gh"), "FLY_ACCESS_TOKEN": "stale-token-from-the-shell",
           **command.inputs["environment"], **extra}
    if previous is not None:
        env["PULUMI_COMMAND_STDOUT"] = previous
    return subprocess.run([*INTERPRETER, command.inputs[phase]], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    for name in ("fly", "gh"):
        (tmp_path / "bin" / name).symlink_to(FAKES / name)
        (tmp_path / name).mkdir()
    app = {"secrets": {"SOMETHING_ELSE": "kept"}, "deployed": {}, "machines": [], "volumes": []}
    (tmp_path / "fly" / "state.json").write_text(json.dumps({"apps": {a: dict(app) for a in APPS.values()}}))
    return tmp_path


def calls(tmp: Path, tool: str) -> list[dict[str, Any]]:
    log = tmp / tool / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def no_value_outside_stdin(entries: list[dict[str, Any]], values: list[str]) -> None:
    for entry in entries:
        assert not any(value in arg for value in values for arg in entry["argv"]), entry["argv"]
        assert "GAIA_PUBLISH_VALUES" not in entry["env"]  # no child inherits the values


def test_fly_imports_each_url_on_stdin_converges_and_removes_on_delete(tmp: Path) -> None:
    commands, outputs = declare(fly={"apps": APPS})
    urls, readers = outputs["serviceUrls"], outputs["serviceReaderUrls"]
    chat = commands["chat-fly"]
    first = run(chat, "create", tmp)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("published ") and urls["chat"] not in first.stdout + first.stderr
    state = json.loads((tmp / "fly" / "state.json").read_text())["apps"][APPS["chat"]]
    assert state["secrets"]["DATABASE_URL"] == urls["chat"]
    assert state["secrets"]["DATABASE_READER_URLS"] == ",".join(readers["chat"])
    assert state["deployed"]["DATABASE_URL"] == urls["chat"]  # deployed to the app's machines
    entries = calls(tmp, "fly")
    imports = [e for e in entries if e["argv"][:2] == ["secrets", "import"]]
    assert len(imports) == 1 and urls["chat"] in imports[0]["stdin"]
    assert all(e["token"] == TOKEN for e in entries)  # the stack's token, not the shell's FLY_ACCESS_TOKEN
    no_value_outside_stdin(entries, [urls["chat"], *readers["chat"]])

    # A second `up` with nothing changed (an update that runs, e.g. a new script text): nothing written.
    before = len(calls(tmp, "fly"))
    again = run(chat, "update", tmp, previous=first.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "nothing to change" in again.stderr
    assert not [e for e in calls(tmp, "fly")[before:] if tuple(e["argv"][:2]) in FLY_WRITES]

    # A rotated URL is written again; so is a value someone removed by hand.
    rotated = chat.inputs["environment"]["GAIA_PUBLISH_VALUES"].replace("gaia_chat:", "gaia_chat_alt:")
    changed = run(chat, "update", tmp, previous=first.stdout, GAIA_PUBLISH_VALUES=rotated)
    assert changed.returncode == 0 and changed.stdout != first.stdout
    state = json.loads((tmp / "fly" / "state.json").read_text())["apps"][APPS["chat"]]
    assert state["secrets"]["DATABASE_URL"].startswith("postgresql://gaia_chat_alt:")
    fly_state = json.loads((tmp / "fly" / "state.json").read_text())
    for where in ("secrets", "deployed"):
        del fly_state["apps"][APPS["chat"]][where]["DATABASE_READER_URLS"]
    (tmp / "fly" / "state.json").write_text(json.dumps(fly_state))
    restored = run(chat, "update", tmp, previous=changed.stdout, GAIA_PUBLISH_VALUES=rotated)
    assert restored.returncode == 0 and restored.stdout == changed.stdout  # the same values, set again
    state = json.loads((tmp / "fly" / "state.json").read_text())["apps"][APPS["chat"]]
    assert state["secrets"]["DATABASE_READER_URLS"] == ",".join(readers["chat"]).replace("gaia_chat:", "gaia_chat_alt:")

    # Deleting the stack removes what it published, and nothing else; a second delete finds nothing to remove.
    gone = run(chat, "delete", tmp)
    assert gone.returncode == 0, gone.stderr
    state = json.loads((tmp / "fly" / "state.json").read_text())["apps"][APPS["chat"]]
    assert state["secrets"] == {"SOMETHING_ELSE": "kept"}
    assert run(chat, "delete", tmp).returncode == 0


def test_github_sets_each_secret_on_stdin_converges_and_removes_on_delete(tmp: Path) -> None:
    commands, outputs = declare(github={"repository": REPO, "environment": ENVIRONMENT})
    urls = outputs["serviceUrls"]
    github = commands["github"]
    first = run(github, "create", tmp, GAIA_DB_GITHUB_TOKEN=GH_TOKEN, GITHUB_TOKEN="some-other-token")
    assert first.returncode == 0, first.stderr
    secrets = json.loads((tmp / "gh" / "state.json").read_text())["environments"][f"{REPO}:{ENVIRONMENT}"]
    assert {name: secrets[name] for name in (f"{s.upper()}_DATABASE_URL" for s in SERVICES)} == {
        f"{s.upper()}_DATABASE_URL": urls[s] for s in SERVICES}
    assert set(secrets) == {f"{s.upper()}_{n}" for s in SERVICES for n in ("DATABASE_URL", "DATABASE_READER_URLS")}
    entries = calls(tmp, "gh")
    sets = [e for e in entries if e["argv"][:2] == ["secret", "set"]]
    assert len(sets) == 8 and all("--body" not in e["argv"] and "-b" not in e["argv"] for e in sets)
    assert all(e["argv"][3:] == ["--env", ENVIRONMENT, "--repo", REPO] for e in sets)
    assert all(e["token"] == GH_TOKEN for e in entries)
    no_value_outside_stdin(entries, list(urls.values()))
    assert not any(value in first.stderr + first.stdout for value in urls.values())

    before = len(calls(tmp, "gh"))
    again = run(github, "update", tmp, previous=first.stdout, GAIA_DB_GITHUB_TOKEN=GH_TOKEN)
    assert again.returncode == 0, again.stderr
    assert [e["argv"][:2] for e in calls(tmp, "gh")[before:]] == [["secret", "list"]]  # read only

    gone = run(github, "delete", tmp, GAIA_DB_GITHUB_TOKEN=GH_TOKEN)
    assert gone.returncode == 0, gone.stderr
    assert json.loads((tmp / "gh" / "state.json").read_text())["environments"][f"{REPO}:{ENVIRONMENT}"] == {}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "GAIA_DB_GITHUB_TOKEN is not set"),
        ({"GAIA_DB_GITHUB_TOKEN": WORKFLOW_TOKEN, "GITHUB_TOKEN": WORKFLOW_TOKEN, "GITHUB_ACTIONS": "true"},
         "is this workflow's GITHUB_TOKEN, which cannot write secrets"),
    ],
)
def test_github_refuses_without_a_token_that_may_write_secrets(tmp: Path, extra: dict[str, str], message: str) -> None:
    commands, _ = declare(github={"repository": REPO, "environment": ENVIRONMENT})
    done = run(commands["github"], "create", tmp, **extra)
    assert done.returncode == 1 and message in done.stderr
    assert calls(tmp, "gh") == []  # refused before gh was called


def test_a_token_gh_may_not_write_with_fails_in_one_sentence(tmp: Path) -> None:
    (tmp / "gh" / "state.json").write_text(json.dumps({"read_only_tokens": [WORKFLOW_TOKEN]}))
    commands, _ = declare(github={"repository": REPO, "environment": ENVIRONMENT})
    done = run(commands["github"], "create", tmp, GAIA_DB_GITHUB_TOKEN=WORKFLOW_TOKEN)
    assert done.returncode == 1 and "HTTP 403" in done.stderr
    assert "GAIA_DB_GITHUB_TOKEN must be allowed to write the environment's secrets" in done.stderr


def test_the_fakes_reject_flags_their_cli_lacks(tmp: Path) -> None:
    env = {**os.environ, "FAKE_FLY_STATE": str(tmp / "fly"), "FAKE_GH_STATE": str(tmp / "gh"), "GH_TOKEN": "t",
           "FLY_API_TOKEN": "t"}
    gh = subprocess.run([str(FAKES / "gh"), "secret", "set", "X", "--environment", "e", "--repo", REPO],
                        env=env, capture_output=True, text=True, input="v", check=False)
    assert gh.returncode == 1 and "unknown flag: --environment" in gh.stderr
    fly = subprocess.run([str(FAKES / "fly"), "secrets", "unset", "X", "--app", APPS["chat"], "--yes"],
                         env=env, capture_output=True, text=True, check=False)
    assert fly.returncode == 1 and "unknown flag" in fly.stderr
