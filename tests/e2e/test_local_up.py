"""The README's first command, `scripts/local-up`, against a recording `pulumi` (the CLI is not on these machines).

It runs from a copy of the files it needs (the script, requirements.txt, and a link to this project's venv), so the
state directory it makes lands in the copy and the repository is never written.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

FAKE_PULUMI = """#!/usr/bin/env bash
printf '%s|%s|%s\\n' "$*" "$PULUMI_BACKEND_URL" "${PULUMI_CONFIG_PASSPHRASE-unset}" >> "$PULUMI_CALLS"
"""


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "local-up", project / "scripts" / "local-up")
    shutil.copy2(ROOT / "requirements.txt", project / "requirements.txt")
    # The script's `pip install -r requirements.txt` finds everything installed: it changes nothing in the venv.
    (project / "venv").symlink_to(ROOT / "venv")
    return project


def run_local_up(tmp_path: Path, with_pulumi: bool) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    project = project_copy(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_pulumi:
        fake = bin_dir / "pulumi"
        fake.write_text(FAKE_PULUMI)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_CONFIG_PASSPHRASE"}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PULUMI_CALLS=str(calls))
    state_in_repo = (ROOT / ".pulumi-state").exists()
    done = subprocess.run(["bash", str(project / "scripts" / "local-up")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert (ROOT / ".pulumi-state").exists() == state_in_repo  # the repository is left alone
    return done, calls.read_text().splitlines() if calls.exists() else [], project


def test_local_up_selects_or_creates_the_stack_in_a_file_backend_and_deploys(tmp_path: Path) -> None:
    done, calls, project = run_local_up(tmp_path, with_pulumi=True)
    assert done.returncode == 0, done.stderr
    backend = f"file://{project}/.pulumi-state"
    assert calls == [
        f"stack select --create local|{backend}|",
        f"up --yes --stack local|{backend}|",
        f"stack output --stack local|{backend}|",
    ]
    assert (project / ".pulumi-state").is_dir()  # the file backend's directory exists before pulumi uses it


def test_local_up_says_what_to_install_without_the_pulumi_cli(tmp_path: Path) -> None:
    done, calls, project = run_local_up(tmp_path, with_pulumi=False)
    assert done.returncode == 1 and calls == []
    assert done.stderr.strip() == (
        "The Pulumi CLI is not installed; install it (https://www.pulumi.com/docs/install/) and run this again."
    )
    assert not (project / ".pulumi-state").exists()  # it stopped before making anything
