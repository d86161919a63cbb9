"""The benchmark (`python -m bench`) at a tiny size, so it cannot rot: every row is printed and a no-op diff opens
no database connection. No timing is asserted; the figures themselves are bench/RESULTS.md's business."""

from __future__ import annotations

import re
import subprocess
import sys

from bench import ROOT
from bench.patterns import PATTERNS
from bench.run import AGAIN, BEFORE, BUILD, DURING, EVAL, FAILED, FRESH, IMPORT_ROW, NOOP, PATTERN, SPREAD, STACKS


def test_the_benchmark_prints_every_row_and_a_no_op_diff_opens_no_connection() -> None:
    results = ROOT / "bench" / "RESULTS.md"
    committed = results.read_bytes() if results.exists() else None
    done = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| figure"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            assert len(cells) == 5, line
            rows[cells[0]] = cells[1:]

    expected = [NOOP, FRESH, AGAIN, FAILED, BEFORE, DURING, SPREAD, BUILD, IMPORT_ROW]
    expected += [f"{PATTERN} {pattern.name} (" for pattern in PATTERNS]
    expected += [f"{EVAL} {stack} ({provider}):" for stack, provider in STACKS]
    for label in expected:
        assert sum(1 for row in rows if row.startswith(label)) == 1, (label, list(rows))
    assert len(rows) == len(expected)

    assert rows[NOOP][0].startswith("0 in 5 diffs"), rows[NOOP]
    assert rows[NOOP][1].startswith("1 per run"), rows[NOOP]  # the seed's psql session, counted the same way
    assert "fails" in rows[AGAIN][1] and "already exists" in rows[AGAIN][1]  # the seed's SQL is not re-runnable
    for pattern in PATTERNS:  # every helper ran and was measured beside its naive statement
        label = f"{PATTERN} {pattern.name} ("
        helper, naive = next(cells for row, cells in rows.items() if row.startswith(label))[:2]
        assert re.match(r"helper: \d+ of [1-9]\d* failed; ", helper), helper
        assert re.match(r"naive: \d+ of [1-9]\d* failed; ", naive), naive
    assert "Machine: " in done.stdout and "PostgreSQL" in done.stdout
    # Without --write the committed results stay as they are.
    assert (results.read_bytes() if results.exists() else None) == committed
