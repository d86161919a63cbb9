"""The README's first command, `scripts/local-up`, against a recording `pulumi` (the CLI is not on these machines).

It runs from a copy of the files it needs (the script, requirements.txt, and a link to this project's venv), so the
state directory it makes lands in the copy and the repository is never written.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

FAKE_PULUMI = """#!/usr/bin/env bash
printf '%s|%s|%s|%s\\n' "$*" "$PULUMI_BACKEND_URL" "${PULUMI_CONFIG_PASSPHRASE-unset}" \\
    "${PULUMI_CONFIG_PASSPHRASE_FILE-unset}" >> "$PULUMI_CALLS"
"""


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "local-up", project / "scripts" / "local-up")
    shutil.copy2(ROOT / "scripts" / "local-pulumi", project / "scripts" / "local-pulumi")
    shutil.copy2(ROOT / "requirements.txt", project / "requirements.txt")
    # The script's `pip install -r requirements.txt` finds everything installed: it changes nothing in the venv.
    (project / "venv").symlink_to(ROOT / "venv")
    return project


def run_local_up(tmp_path: Path, with_pulumi: bool, project: Path | None = None,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    project = project or project_copy(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if with_pulumi:
        fake = bin_dir / "pulumi"
        fake.write_text(FAKE_PULUMI)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    own = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
    env = {k: v for k, v in os.environ.items() if k not in own}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PULUMI_CALLS=str(calls), **(extra_env or {}))
    state_in_repo = (ROOT / ".pulumi-state").exists()
    done = subprocess.run(["bash", str(project / "scripts" / "local-up")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert (ROOT / ".pulumi-state").exists() == state_in_repo  # the repository is left alone
    return done, calls.read_text().splitlines() if calls.exists() else [], project


def test_local_up_selects_or_creates_the_stack_in_a_file_backend_and_deploys(tmp_path: Path) -> None:
    done, calls, project = run_local_up(tmp_path, with_pulumi=True)
    assert done.returncode == 0, done.stderr
    backend = f"file://{project}/.pulumi-state"
    # Finding 12: the secrets are encrypted with a generated passphrase, kept in a git-ignored file only it can read.
    passphrase = project / ".pulumi-state" / "local.passphrase"
    assert calls == [
        f"stack select --create local|{backend}|unset|{passphrase}",
        f"up --yes --stack local|{backend}|unset|{passphrase}",
        f"stack output --stack local|{backend}|unset|{passphrase}",
    ]
    assert len(passphrase.read_text().strip()) >= 40 and passphrase.stat().st_mode & 0o077 == 0
    assert (project / ".pulumi-state").is_dir()  # the file backend's directory exists before pulumi uses it
    # The next run uses the same file; a passphrase of your own (even an empty one) wins.
    first = passphrase.read_text()
    (tmp_path / "calls").unlink()
    again, calls, _ = run_local_up(tmp_path, with_pulumi=True, project=project)
    assert again.returncode == 0 and passphrase.read_text() == first and calls[0].endswith(f"|unset|{passphrase}")
    (tmp_path / "calls").unlink()
    own, calls, _ = run_local_up(tmp_path, with_pulumi=True, project=project,
                                 extra_env={"PULUMI_CONFIG_PASSPHRASE": ""})
    assert own.returncode == 0 and calls[0] == f"stack select --create local|{backend}||unset"


def test_an_existing_stack_without_the_passphrase_file_is_not_given_a_new_one(tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    stacks = project / ".pulumi-state" / ".pulumi" / "stacks" / "gaia-db"
    stacks.mkdir(parents=True)
    (stacks / "local.json").write_text("{}")
    done, calls, _ = run_local_up(tmp_path, with_pulumi=True, project=project)
    assert done.returncode == 1 and calls == []
    assert "set PULUMI_CONFIG_PASSPHRASE to the passphrase it was created with" in done.stderr
    assert not (project / ".pulumi-state" / "local.passphrase").exists()


# A stand-in for Pulumi's installer (get.pulumi.com's install.sh, which cannot be downloaded here): it takes the
# real script's options, records them, and installs the recording pulumi where --install-root says.
STAND_IN_INSTALLER = """#!/bin/sh
echo "$*" > "$PULUMI_CALLS.installer"
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version|--install-root) [ "$1" = --install-root ] && root="$2"; shift 2 ;;
    --no-edit-path|--silent) shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
mkdir -p "$root/bin"
cat > "$root/bin/pulumi" <<'FAKE'
""" + FAKE_PULUMI + """FAKE
chmod +x "$root/bin/pulumi"
"""


def test_without_the_pulumi_cli_the_pinned_one_is_installed_into_the_project(tmp_path: Path) -> None:
    installer = tmp_path / "install.sh"
    installer.write_text(STAND_IN_INSTALLER)
    done, calls, project = run_local_up(tmp_path, with_pulumi=False,
                                        extra_env={"GAIA_PULUMI_INSTALLER": str(installer)})
    assert done.returncode == 0, done.stderr
    pinned = re.search(r"^PULUMI_VERSION=(\d+\.\d+\.\d+)", (ROOT / "scripts" / "local-up").read_text(), re.M)
    assert pinned is not None
    assert (tmp_path / "calls.installer").read_text().split() == [
        "--version", pinned.group(1), "--install-root", f"{project}/.pulumi-cli", "--no-edit-path", "--silent"]
    assert (project / ".pulumi-cli" / "bin" / "pulumi").is_file()
    assert [call.split("|")[0] for call in calls] == ["stack select --create local", "up --yes --stack local",
                                                      "stack output --stack local"]
    assert "scripts/local-pulumi" in done.stderr  # how to reach the same backend afterwards
    # The follow-up commands (README) reach the same backend and passphrase with the project's CLI.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env.update(PATH="/usr/bin:/bin", PULUMI_CALLS=str(tmp_path / "calls"))
    follow = subprocess.run(["bash", str(project / "scripts" / "local-pulumi"), "destroy", "--stack", "local"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert follow.returncode == 0, follow.stderr
    last = (tmp_path / "calls").read_text().splitlines()[-1]
    assert last == (f"destroy --stack local|file://{project}/.pulumi-state|unset|"
                    f"{project}/.pulumi-state/local.passphrase")


def test_a_missing_installer_download_tool_is_one_sentence(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for tool in ("bash", "python3", "id", "dirname", "mkdir", "mktemp", "rm", "openssl", "sh", "cat"):
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            (bare / tool).symlink_to(found)
    project = project_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env.update(PATH=str(bare))
    done = subprocess.run([str(bare / "bash"), str(project / "scripts" / "local-up")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "The Pulumi CLI is not installed and curl is missing to fetch its installer; install either and run this "
        "again."
    )
    assert not (project / ".pulumi-state").exists()  # it stopped before making anything
