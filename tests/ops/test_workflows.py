"""The GitHub workflows pass check-jsonschema (GitHub's workflow schema) and zizmor (offline), and keep the rules
no tool checks for us: every action pinned to a full commit SHA with its version beside it, no persisted
credentials, minimal permissions, no `${{ }}` inside a `run:` script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install {name} (requirements-dev.txt)"
    return str(found)


def test_the_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"preview.yml", "deploy.yml", "deploy-stack.yml"}


def test_check_jsonschema_github_workflows() -> None:
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_zizmor_finds_nothing() -> None:
    done = subprocess.run([tool("zizmor"), "--offline", "--no-progress", "--config",
                           str(ROOT / ".github" / "zizmor.yml"), *map(str, WORKFLOWS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout


def test_house_rules() -> None:
    for path in WORKFLOWS:
        text = path.read_text()
        for uses in re.findall(r"uses:\s*(\S+.*)", text):
            if uses.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", uses), f"{path.name}: {uses}"
        assert text.count("actions/checkout@") == text.count("persist-credentials: false"), path.name
        assert re.search(r"^permissions: \{\}$", text, re.M), f"{path.name}: top-level permissions must be empty"
        assert "write-all" not in text and "contents: write" not in text
        # No expression inside a shell script: values reach scripts through env.
        for block in re.findall(r"run: \|\n((?:\s{10,}.*\n)+)|run: (.*)", text):
            assert "${{" not in "".join(block), f"{path.name}: expression in a run script"


def test_every_action_is_the_commit_its_tag_was_checked_to_name() -> None:
    """deploy-stack.yml's header records, per action, the tag and the commit `git rev-parse <tag>^{commit}` gave on
    the action's repository; every `uses:` in every workflow is one of those commits, with its tag beside it."""
    header = (ROOT / ".github" / "workflows" / "deploy-stack.yml").read_text()
    recorded: dict[tuple[str, str], set[str]] = {}
    for repo, tag, same, sha in re.findall(r"^#   ([\w.-]+/[\w.-]+) (v[\d.]+)(?: \(= ([\d.v]+)\))? = ([0-9a-f]{40})$",
                                            header, re.M):
        recorded.setdefault((repo, sha), set()).update({tag, *([same] if same else [])})
    assert len(recorded) >= 7, recorded
    for path in WORKFLOWS:
        for action, sha, tag in re.findall(r"uses:\s*([\w.-]+/[\w.-]+)[\w./-]*@([0-9a-f]{40}) # (v[\d.]+)",
                                           path.read_text()):
            assert tag in recorded.get((action, sha), set()), f"{path.name}: {action}@{sha} # {tag} is not recorded"
