"""gaia-db benchmarks: `venv/bin/python -m bench [--rows N | --quick] [--write]` (see bench/run.py)."""

import sys
from pathlib import Path

# The repository root, the same as tests/program.py's ROOT, which cannot be imported here: this is what puts tests/
# on sys.path, and `python -m bench.evaluation --import ...` must not load pulumi (program.py does) before it measures.
ROOT = Path(__file__).resolve().parent.parent
# The benchmarks reuse the test harness (tests/pgserver.py, provider_process.py, program.py).
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
