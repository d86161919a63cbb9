"""The type check still covers the cloud SDKs' resource arguments with their package roots skipped (pyproject.toml):
a misspelt argument in the components is an error, so the fast configuration loses nothing that matters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# One test, not one per module: two mypy processes sharing .mypy_cache on two xdist workers could race.
MISSPELLINGS = [
    ("components/aws.py", "apply_method"),  # rds.ParameterGroupParameterArgs
    ("components/gcp.py", "deletion_protection"),  # sql.DatabaseInstance
]


def test_a_misspelt_resource_argument_fails_the_type_check(tmp_path: Path) -> None:
    for module, argument in MISSPELLINGS:
        source = (ROOT / module).read_text()
        assert f"{argument}=" in source
        shadow = tmp_path / Path(module).name
        shadow.write_text(source.replace(f"{argument}=", f"{argument[:-1]}=", 1))
        done = subprocess.run([sys.executable, "-m", "mypy", module, "--shadow-file", module, str(shadow)], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        assert done.returncode == 1, done.stdout
        assert f'Unexpected keyword argument "{argument[:-1]}"' in done.stdout
    # The real files pass, so each error above is its misspelling's alone.
    clean = subprocess.run([sys.executable, "-m", "mypy", *(module for module, _ in MISSPELLINGS)], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout
