"""gaia-db benchmarks: `venv/bin/python -m bench [--rows N | --quick] [--write]` (see bench/run.py)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The benchmarks reuse the test harness (tests/pgserver.py, provider_process.py, program.py).
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
