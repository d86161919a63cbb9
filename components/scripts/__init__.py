"""Shell scripts run by `pulumi_command.local.Command` resources.

A script's text (not its path) is the resource's input, so `pulumi preview` shows a changed script as a diff and the
state records exactly what ran. Secrets reach scripts only through the resource's `environment`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

HERE = Path(__file__).parent

# Scripts are run as `bash -c <text>`; the tests execute them the same way.
INTERPRETER = ["/bin/bash", "-c"]


@cache
def load(*names: str) -> str:
    """The named scripts (`fly/create.sh`, ...) joined in order, e.g. a shared library first, then the script."""
    return "\n".join((HERE / name).read_text() for name in names)
