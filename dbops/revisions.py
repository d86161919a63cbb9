"""The migration head, read from migrations/versions/*.py as text: no alembic, SQLAlchemy or psycopg import.

The Pulumi program needs the head on every `pulumi preview` and `pulumi up`, where importing alembic (and with it
SQLAlchemy and psycopg) costs about half a second and 40 MB, measured with bench/. Each revision file's module-level
`revision = "..."` and `down_revision = "..."` are read with `ast`; a test checks the answer equals Alembic's own.
"""

from __future__ import annotations

import ast
from pathlib import Path

from dbops.errors import DbopsError

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def _assignments(path: Path) -> dict[str, object]:
    names: dict[str, object] = {}
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        targets: list[ast.expr]
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        if isinstance(value, ast.Constant):
            names.update({target.id: value.value for target in targets if isinstance(target, ast.Name)})
    return names


def head_revision(versions: Path = VERSIONS) -> str:
    """The one revision no other revision builds on."""
    parents: dict[str, str | None] = {}
    for path in sorted(versions.glob("*.py")):
        names = _assignments(path)
        if not isinstance(names.get("revision"), str):
            raise DbopsError(f"{path.name} in migrations/versions names no revision")
        down = names.get("down_revision")
        parents[str(names["revision"])] = None if down is None else str(down)
    heads = sorted(set(parents) - set(parents.values()))
    if len(heads) != 1:
        raise DbopsError(f"migrations/ must have exactly one head revision, found {len(heads)}: {', '.join(heads)}")
    return heads[0]
