"""The README's first command, `scripts/local-up`, against a recording `pulumi` (the CLI is not on these machines)."""

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


def run_local_up(tmp_path: Path, with_pulumi: bool) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_pulumi:
        fake = bin_dir / "pulumi"
        fake.write_text(FAKE_PULUMI)
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls"
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_CONFIG_PASSPHRASE"}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", PULUMI_CALLS=str(calls))
    state_existed = (ROOT / ".pulumi-state").exists()
    try:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "local-up")], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        if not state_existed:
            shutil.rmtree(ROOT / ".pulumi-state", ignore_errors=True)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_local_up_selects_or_creates_the_stack_in_a_file_backend_and_deploys(tmp_path: Path) -> None:
    done, calls = run_local_up(tmp_path, with_pulumi=True)
    assert done.returncode == 0, done.stderr
    backend = f"file://{ROOT}/.pulumi-state"
    assert calls == [
        f"stack select --create local|{backend}|",
        f"up --yes --stack local|{backend}|",
        f"stack output --stack local|{backend}|",
    ]


def test_local_up_says_what_to_install_without_the_pulumi_cli(tmp_path: Path) -> None:
    done, calls = run_local_up(tmp_path, with_pulumi=False)
    assert done.returncode == 1 and calls == []
    assert done.stderr.strip() == (
        "The Pulumi CLI is not installed; install it (https://www.pulumi.com/docs/install/) and run this again."
    )
