"""The offline SQL of every revision passes squawk; the history is one straight line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from dbhelpers import HEAD, REVISIONS

from dbops import migrate, online
from dbops.errors import DbopsError

SQUAWK = str(Path(sys.executable).parent / "squawk")


def offline_sql(revision: str) -> str:
    """`alembic upgrade <previous>:<revision> --sql`: this revision's SQL alone."""
    script = migrate.script_directory().get_revision(revision)
    assert script is not None
    buffer = io.StringIO()
    config = migrate.alembic_config()
    config.output_buffer = buffer
    command.upgrade(config, f"{script.down_revision or 'base'}:{revision}", sql=True)
    return buffer.getvalue()


def squawk(sql: str, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SQUAWK, "--reporter", "gcc", "--pg-version", "15", "--stdin-filepath", name],
        input=sql,
        capture_output=True,
        text=True,
    )


def test_history_is_linear_with_one_head() -> None:
    script = migrate.script_directory()
    revisions = list(reversed(list(script.walk_revisions())))
    assert tuple(r.revision for r in revisions) == REVISIONS
    assert script.get_heads() == [HEAD]
    assert all(isinstance(r.down_revision, (str, type(None))) for r in revisions)


@pytest.mark.parametrize("revision", REVISIONS)
def test_revision_sql_passes_squawk(revision: str) -> None:
    result = squawk(offline_sql(revision), f"{revision}.sql")
    assert result.returncode == 0, result.stdout + result.stderr


def test_squawk_is_live() -> None:
    # Without this revision's justified ignore, the seed's column types are flagged: the linter really runs.
    sql = offline_sql("0001_seed_schema").replace("-- squawk-ignore-file", "-- (ignore removed)")
    result = squawk(sql, "0001_without_ignore.sql")
    assert result.returncode != 0 and "prefer-text-field" in result.stdout
    assert squawk("CREATE INDEX idx ON users (email);", "bad.sql").returncode != 0


def test_the_concurrent_index_revision_holds_nothing_else() -> None:
    sql = offline_sql("0002_chat_history_index")
    ddl = [s.strip() for s in sql.split(";") if s.strip().split(" ", 1)[0] in ("CREATE", "DROP", "ALTER")]
    assert ddl == [
        "DROP INDEX CONCURRENTLY IF EXISTS idx_chat_messages_conversation_created",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_chat_messages_conversation_created "
        "ON chat_messages (conversation_id, created_at)",
    ]
    # Outside the per-revision transaction, with the time limit raised only around the build.
    build = sql.index("CREATE INDEX CONCURRENTLY")
    assert sql.rindex("COMMIT;", 0, build) > sql.rindex("BEGIN;", 0, build)
    assert sql.rindex("SET statement_timeout = '4h'", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert f"SET statement_timeout = '{migrate.STATEMENT_TIMEOUT}'" in sql[build:]
    # Finding 2: the build's lock waits stay short (and are retried online); only the statement gets 4 h.
    assert sql.rindex(f"SET lock_timeout = '{online.BUILD_LOCK_TIMEOUT}'", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert "SET lock_timeout = '4h'" not in sql
    # One core for the build, so the application's queries keep the others (bench figure 3), then back to normal.
    assert sql.rindex("SET max_parallel_maintenance_workers = 0", 0, build) > sql.rindex("COMMIT;", 0, build)
    assert "RESET max_parallel_maintenance_workers" in sql[build:]


# The gate: squawk's rules for statements that take a lock writes queue behind while the table is scanned or
# rewritten. Every revision's SQL must pass them (with everything else squawk checks); the only way past one is the
# per-statement escape hatch, `-- squawk-ignore <rule> -- <reason>` on the line before the statement
# (`db.unsafe(...)` writes it). A file-wide ignore may name style rules only.
LOCKING_RULES = (
    "adding-field-with-default",  # a volatile default rewrites the table
    "adding-foreign-key-constraint",
    "adding-not-nullable-field",
    "adding-required-field",
    "adding-serial-primary-key-field",
    "changing-column-type",  # rewrites the table
    "constraint-missing-not-valid",
    "disallowed-unique-constraint",
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "ban-drop-column",
    "renaming-column",
    "renaming-table",
)
# What squawk does not flag but locks a table for the length of a rewrite: refused outright in revisions.
REWRITES = re.compile(r"\b(VACUUM\s+FULL|CLUSTER\s|REINDEX\s+(?!.*CONCURRENTLY)|LOCK\s+TABLE)", re.IGNORECASE)
IGNORE = re.compile(r"--\s*squawk-ignore(?P<file>-file)?\s+(?P<rest>.*)")
SETTINGS = "".join(f"{statement};\n" for statement in migrate.MIGRATION_SETTINGS)


def steps_sql(write: Callable[[online.Steps], object]) -> str:
    """The offline SQL of some steps, after the session settings every revision's SQL starts with."""
    lines: list[str] = [SETTINGS]
    write(online.Offline(lambda statement: lines.append(f"{statement};\n"), lambda line: lines.append(line + "\n")))
    return "".join(lines)


def rules_flagged(sql: str, name: str) -> set[str]:
    return set(re.findall(r"warning: ([a-z-]+) ", squawk(sql, name).stdout))


@pytest.mark.parametrize("revision", REVISIONS)
def test_a_revision_passes_the_locking_rules_only_through_a_commented_per_statement_ignore(revision: str) -> None:
    sql = offline_sql(revision)
    assert not REWRITES.search(sql), "VACUUM FULL / CLUSTER / REINDEX / LOCK TABLE hold the table for a rewrite"
    for match in IGNORE.finditer(sql):
        rest = match["rest"]
        if match["file"]:
            named = {rule.strip() for rule in rest.split("--")[0].split(",")}
            assert named and not named & set(LOCKING_RULES), f"a file-wide ignore of a locking rule: {match[0]}"
        else:
            rule, _, reason = rest.partition(" -- ")
            assert rule.strip() and len(reason.split()) >= 3, f"an ignore without its reason: {match[0]}"


NAIVE_AND_SAFE: dict[str, tuple[str, Callable[[online.Steps], object], set[str]]] = {
    "add index": ("CREATE INDEX idx_chat_model ON chat_messages (model);",
                  lambda db: db.create_index("idx_chat_model", "chat_messages", ["model"]),
                  {"require-concurrent-index-creation"}),
    "add foreign key": (
        "ALTER TABLE chat_messages ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
        lambda db: db.add_foreign_key("fk", "chat_messages", ["user_id"], "users"),
        {"adding-foreign-key-constraint", "constraint-missing-not-valid"}),
    "add check": ("ALTER TABLE chat_messages ADD CONSTRAINT ck CHECK (tokens_used >= 0);",
                  lambda db: db.add_check("ck", "chat_messages", "tokens_used >= 0"),
                  {"constraint-missing-not-valid"}),
    "add not null": ("ALTER TABLE chat_messages ALTER COLUMN model SET NOT NULL;",
                     lambda db: db.add_not_null("chat_messages", "model"), {"adding-not-nullable-field"}),
    "add column with a volatile default": (
        "ALTER TABLE chat_messages ADD COLUMN score double precision DEFAULT random();",
        lambda db: (db.add_column("chat_messages", "score", "double precision"),
                    db.backfill("chat_messages", "score = random()", pending="score IS NULL")),
        {"adding-field-with-default"}),
}


@pytest.mark.parametrize("pattern", NAIVE_AND_SAFE)
def test_the_gate_flags_the_naive_statement_and_passes_the_helper(pattern: str) -> None:
    naive, helper, rules = NAIVE_AND_SAFE[pattern]
    flagged = rules_flagged(f"{SETTINGS}BEGIN;\n{naive}\nCOMMIT;\n", "naive.sql")
    assert rules <= flagged and rules <= set(LOCKING_RULES), flagged
    safe = steps_sql(helper)
    result = squawk(safe, "helper.sql")
    assert result.returncode == 0, safe + result.stdout


def test_the_escape_hatch_silences_its_own_statement_only() -> None:
    drop = "ALTER TABLE public.\"chat_messages\" DROP COLUMN \"model\""
    hatch = steps_sql(lambda db: db.unsafe(drop, tables=["chat_messages"], rule="ban-drop-column",
                                           reason="no release since v12 reads the column"))
    assert "-- squawk-ignore ban-drop-column -- no release since v12 reads the column\n" + drop in hatch
    assert squawk(hatch, "hatch.sql").returncode == 0, hatch
    assert "ban-drop-column" in rules_flagged(hatch + f"BEGIN;\n{drop};\nCOMMIT;\n", "twice.sql")
    with pytest.raises(DbopsError, match="needs a reason"):
        steps_sql(lambda db: db.unsafe(drop, tables=["chat_messages"], rule="ban-drop-column", reason="ok"))


def test_the_template_s_safe_patterns_pass_the_gate() -> None:
    """script.py.mako's example (every new revision starts with it) is run offline and linted, so it stays true."""
    template = (migrate.MIGRATIONS / "script.py.mako").read_text()
    block = template.split("#     with online.steps() as db:", 1)[1].split("\n#\n", 1)[0]
    body = "\n".join(line.removeprefix("#     ") for line in block.strip("\n").splitlines())
    assert body.count("db.") == 8, body
    steps = "def example(db):\n" + body + "\n"
    namespace: dict[str, object] = {}
    exec(compile(steps, "script.py.mako", "exec"), namespace)  # noqa: S102 - our own template
    sql = steps_sql(namespace["example"])  # type: ignore[arg-type]
    result = squawk(sql, "template.sql")
    assert result.returncode == 0, sql + result.stdout
